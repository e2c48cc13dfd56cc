"""The report's sentences, held against numbers worked out by hand: arms better and worse than
the baseline, and CLR with one range test against a tuned fixed LR, in both directions."""

from __future__ import annotations

import math

import pytest

from service.reports import build_report
from service.reports.verdicts import (
    CLR_VS_TUNED,
    compute_text,
    cost_note,
    target_description,
    welch_sentence,
)
from tests.factories import (
    against_baseline_results,
    clr_vs_tuned_results,
    report_row,
    results_arm,
    results_document,
    results_trial,
    time_to_target_results,
)

# Welch's t-test of two seeds against two, each pair 0.01 apart (sample variance 0.00005):
# a difference of 0.06 gives t = 0.06 / sqrt(0.00005 / 2 + 0.00005 / 2) = 8.485 with
# 2 degrees of freedom, whose two-sided p is 1 - t / sqrt(t^2 + 2) = 0.0136.
T_006 = 0.06 / math.sqrt(0.00005)
P_006 = 1 - T_006 / math.sqrt(T_006**2 + 2)
# slow [0.92, 0.92] against fixed [0.90, 0.91]: t = 0.015 / sqrt(0 + 0.00005 / 2) = 3 with
# 1 degree of freedom (all the variance is fixed's), p = 1 - 2 atan(3) / pi = 0.2048.
P_SLOW = 1 - 2 * math.atan(3) / math.pi


def test_the_hand_worked_p_values() -> None:
    assert f"{P_006:.3f}" == "0.014" and f"{P_SLOW:.3f}" == "0.205"


def test_arms_better_and_worse_than_the_baseline_in_words() -> None:
    report = build_report(against_baseline_results())
    assert report["verdicts"] == [
        # Training time is iterations / 50 s in these documents (20 ms per iteration):
        # fixed crosses at 200 iterations, 4 s, in both seeds.
        "fixed took a median 4.00 s of training to reach the target (2 of 2 seeds; "
        "95% CI 4.00 s to 4.00 s; 20.00 ms per iteration).",
        # fast: 100 against 200 iterations, 200 / 100 = 2.0x fewer
        "fast reached the target (90.0%) at 100 iterations, 2.0x fewer than fixed (200).",
        "fast took a median 2.00 s of training to reach the target, 2.0x faster than fixed "
        "(4.00 s) (2 of 2 seeds; 95% CI 2.00 s to 2.00 s; 20.00 ms per iteration).",
        # slow: 483.3 against 200, 483.3 / 200 = 2.4x more (not the speedup, 0.41)
        "slow reached the target (90.0%) at 483 iterations, 2.4x more than fixed (200).",
        # 483.3 / 50 = 9.67 s
        "slow took a median 9.67 s of training to reach the target, 2.4x slower than fixed "
        "(4.00 s) (2 of 2 seeds; 95% CI 9.67 s to 9.67 s; 20.00 ms per iteration).",
        "weak never reached the target (90.0%): 0 of 2 seeds; final accuracy 84.5%.",
        "weak: median training time to target unbounded (0 of 2 seeds reached it, a seed "
        "that misses counting as infinity; 20.00 ms per iteration).",
        "Final accuracy of fast, 96.5% vs 90.5% for fixed: significantly higher at 5% (p = 0.014).",
        "Final accuracy of slow, 92.0% vs 90.5% for fixed: no significant difference at 5% "
        "(p = 0.205).",
        # weak ends 0.06 below the baseline: "lower", with the same p as fast's 0.06 above
        "Final accuracy of weak, 84.5% vs 90.5% for fixed: significantly lower at 5% (p = 0.014).",
    ]
    p = {row["arm"]: row["welch"] and row["welch"]["p_value"] for row in report["arms"]}
    assert p["fast"] == pytest.approx(P_006) and p["weak"] == pytest.approx(P_006)
    assert p["slow"] == pytest.approx(P_SLOW)


def test_the_baseline_line_of_an_arm_as_fast_as_it() -> None:
    results = against_baseline_results()
    for trial in results["trials"]:
        if trial["arm"] == "slow":  # now the same curve as the baseline's first seed
            trial["points"] = [dict(p) for p in results["trials"][0]["points"]]
    (line,) = [v for v in build_report(results)["verdicts"] if v.startswith("slow reached")]
    assert (
        line == "slow reached the target (90.0%) at 200 iterations, about as many as fixed (200)."
    )


def _clr_line(report: dict) -> str:
    (line,) = [v for v in report["verdicts"] if v.startswith(CLR_VS_TUNED)]
    return line


def test_clr_worse_and_costlier_than_the_tuned_fixed_lr_in_words() -> None:
    # CLR: range test 3,000 + trials 1,000 = 4,000; tuned: 500 + 1,000 = 1,500;
    # 4,000 / 1,500 = 2.7x more compute. Finals 0.845 against 0.905: 0.06 lower.
    report = build_report(clr_vs_tuned_results((0.84, 0.85), (0.90, 0.91), range_test=3000))
    assert _clr_line(report) == (
        f"{CLR_VS_TUNED}: sgd-triangular (the only CLR arm with range-test bounds) ended at "
        "84.5% against 90.5% for sgd-fixed-tuned: significantly lower at 5% (p = 0.014). "
        "Iterations to the target (80.0%): 300 against 175. Compute: range test 3,000 + "
        "trials 1,000 = 4,000 iterations against tuning 500 (2 trials) + trials 1,000 = "
        "1,500 iterations; sgd-triangular used 2.7x more compute."
    )


def test_clr_better_and_cheaper_than_the_tuned_fixed_lr_in_words() -> None:
    # CLR: 250 + 1,000 = 1,250 against 1,500: 1,500 / 1,250 = 1.2x less compute.
    report = build_report(clr_vs_tuned_results((0.90, 0.91), (0.84, 0.85), range_test=250))
    assert _clr_line(report) == (
        f"{CLR_VS_TUNED}: sgd-triangular (the only CLR arm with range-test bounds) ended at "
        "90.5% against 84.5% for sgd-fixed-tuned: significantly higher at 5% (p = 0.014). "
        "Iterations to the target (80.0%): 300 against 175. Compute: range test 250 + "
        "trials 1,000 = 1,250 iterations against tuning 500 (2 trials) + trials 1,000 = "
        "1,500 iterations; sgd-triangular used 1.2x less compute."
    )


def test_clr_costing_as_much_as_the_tuned_fixed_lr() -> None:
    report = build_report(clr_vs_tuned_results((0.90, 0.91), (0.90, 0.91), range_test=500))
    assert _clr_line(report).endswith(
        "no significant difference at 5% (p = 1.000). Iterations to the target (80.0%): 300 "
        "against 175. Compute: range test 500 + trials 1,000 = 1,500 iterations against "
        "tuning 500 (2 trials) + trials 1,000 = 1,500 iterations; sgd-triangular and "
        "sgd-fixed-tuned used about the same compute."
    )


@pytest.mark.parametrize(
    ("difference", "direction"), [(0.06, "higher"), (-0.06, "lower"), (-1e-9, "lower")]
)
def test_welch_sentence_says_the_direction_of_the_difference(
    difference: float, direction: str
) -> None:
    sentence = welch_sentence("clr", "fixed", 3, 3, 0.0136, difference)
    assert sentence == f"significantly {direction} at 5% (p = 0.014)"


def test_welch_sentence_without_a_test() -> None:
    assert welch_sentence("clr", "fixed", 1, 3, None, None) == (
        "not tested: needs 2 or more finished seeds in both clr and fixed (has 1 and 3)"
    )
    assert welch_sentence("clr", "fixed", 2, 2, None, 0.0).startswith("identical results")
    assert welch_sentence("clr", "fixed", 2, 2, 0.0004, 0.1).endswith("(p < 0.001)")
    assert welch_sentence("clr", "fixed", 2, 2, 0.05, 0.1) == (
        "no significant difference at 5% (p = 0.050)"
    )


@pytest.mark.parametrize(
    ("ratio", "said"),
    [
        (1500 / 4000, "clr used 2.7x more compute"),  # the tuned arm used 0.375 of CLR's
        (4000 / 1500, "clr used 2.7x less compute"),
        (1.04, "clr and tuned used about the same compute"),
    ],
)
def test_compute_text_says_which_arm_used_more(ratio: float, said: str) -> None:
    compute = {"ratio": ratio, "per_seed": False, "clr": 1.0, "fixed": ratio, "seeds": (3, 3)}
    assert compute_text("clr", "tuned", compute) == said


def test_compute_text_per_trained_model() -> None:
    compute = {"ratio": 5226 / 972, "per_seed": True, "clr": 972, "fixed": 5226, "seeds": (3, 2)}
    assert compute_text("clr", "tuned", compute) == (
        "clr used 5.4x less compute per trained model (they trained 3 and 2 seeds: 972 against "
        "5,226 iterations each)"
    )


def test_cost_note_and_target_description() -> None:
    assert cost_note(300, ["a", "b"]).startswith(
        "The range test ran once (300 iterations) and is shared by 2 arms (a, b); each is "
        "charged it in full"
    )
    assert cost_note(300, ["a"]).startswith("The range test (300 iterations) is charged to a,")
    assert cost_note(300, []).startswith("The range test ran (300 iterations) but no arm")
    assert cost_note(0, []).startswith("No range test was run")
    assert target_description("spec", "fixed", 0.9) == "the spec's target_accuracy"
    assert target_description("baseline", "fixed", 0.9) == (
        "the baseline (fixed)'s final mean accuracy"
    )
    assert target_description("baseline", "fixed", None).endswith(", not known yet")


@pytest.mark.parametrize("early", ["clr", "fixed"])
def test_a_target_met_at_iteration_0_gives_no_speedup(early: str) -> None:
    """The target is the baseline's final mean; an arm already there before training (or a
    baseline whose target its first evaluation met) has no iterations ratio to speak of."""
    curves = {"fixed": [0.10, 0.20, 0.30], "clr": [0.35, 0.36, 0.37]}
    if early == "fixed":  # target 0.30: fixed is at it from iteration 0
        curves = {"fixed": [0.30, 0.30, 0.30], "clr": [0.10, 0.32, 0.33]}
    arms = {name: results_arm("fixed", {"lr": 0.05}) for name in curves}
    trials = [results_trial(name, 0, acc, start=0) for name, acc in curves.items()]
    report = build_report(results_document(arms, trials))
    assert report_row(report, "clr")["speedup"] is None
    (line,) = [v for v in report["verdicts"] if v.startswith("clr reached")]
    if early == "clr":
        # fixed crosses 0.30 at its last point, iteration 200; clr is there at 0
        assert line == (
            "clr reached the baseline's final accuracy (30.0%) at 0 iterations; fixed at 200: "
            "no speedup is defined when the target is met at iteration 0."
        )
    else:
        # clr crosses 0.30 between 0.10 at 0 and 0.32 at 100: 0 + 0.20 / 0.22 * 100 = 90.9
        assert line == (
            "clr reached the baseline's final accuracy (30.0%) at 91 iterations; fixed at 0: "
            "no speedup is defined when the target is met at iteration 0."
        )


def test_time_lines_beside_the_iteration_lines_an_arm_slower_in_time() -> None:
    verdicts = build_report(time_to_target_results())["verdicts"]
    at = verdicts.index(
        "prodigy reached the target (90.0%) at 100 iterations, 2.0x fewer than sgd (200)."
    )
    # Half the iterations at five times the cost per iteration: 5.0 s against 2.0 s.
    assert verdicts[at + 1] == (
        "prodigy took a median 5.00 s of training to reach the target, 2.5x slower than sgd "
        "(2.00 s) (5 of 5 seeds; 95% CI 5.00 s to 5.00 s; 50.00 ms per iteration)."
    )
    assert verdicts[0] == (
        "sgd took a median 2.00 s of training to reach the target (5 of 5 seeds; "
        "95% CI 2.00 s to 2.00 s; 10.00 ms per iteration)."
    )
    assert (
        "wsd took a median 4.00 s of training to reach the target, 2.0x slower than sgd "
        "(2.00 s) (4 of 5 seeds; 95% CI from 3.00 s, unbounded above; 10.00 ms per iteration)."
    ) in verdicts
    assert (
        "dog: median training time to target unbounded (2 of 5 seeds reached it, a seed that "
        "misses counting as infinity; 10.00 ms per iteration)."
    ) in verdicts
