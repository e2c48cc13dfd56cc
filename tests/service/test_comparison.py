"""The comparison report's numbers, against figures worked out by hand (tests/factories.py):
iterations to target and speedups, NaN points, the CLR arm chosen against a tuned fixed LR,
Welch's tests and the compute ratio."""

from __future__ import annotations

import json
import math

import pytest

from service.reports.comparison import build_report, clr_vs_tuned, compute_ratio
from tests.factories import (
    against_baseline_results,
    clr_vs_tuned_results,
    report_row,
    time_to_target_results,
)

NAN = math.nan


def _mean_reach(row: dict) -> dict:
    """Iterations to target as a mean over the seeds that reached it (the median beside it
    is tests/service/test_time_to_target.py's)."""
    return {k: row["iterations_to_target"][k] for k in ("mean", "reached", "of")}


def test_iterations_to_target_and_speedup_by_hand() -> None:
    report = build_report(against_baseline_results())
    assert report["target"] == {
        "accuracy": 0.9,
        "source": "spec",
        "description": "the spec's target_accuracy",
        "rule": report["target"]["rule"],
    }
    reach = {row["arm"]: _mean_reach(row) for row in report["arms"]}
    assert reach["fixed"] == {"mean": pytest.approx(200), "reached": 2, "of": 2}
    assert reach["fast"] == {"mean": pytest.approx(100), "reached": 2, "of": 2}
    assert reach["slow"] == {"mean": pytest.approx(400 + 0.1 / 0.12 * 100), "reached": 2, "of": 2}
    assert reach["weak"] == {"mean": None, "reached": 0, "of": 2}
    speedup = {row["arm"]: row["speedup"] for row in report["arms"]}
    assert speedup["fast"] == pytest.approx(200 / 100)  # the baseline's over the arm's
    assert speedup["slow"] == pytest.approx(200 / (400 + 0.1 / 0.12 * 100))
    assert speedup["fixed"] == pytest.approx(1.0) and speedup["weak"] is None


def test_final_accuracies_and_welch_against_the_baseline() -> None:
    report = build_report(against_baseline_results())
    weak = report_row(report, "weak")
    assert weak["final_accuracy"]["mean"] == pytest.approx(0.845)
    assert weak["welch"]["against"] == "fixed"
    # difference -0.06, t = 8.485 with 2 degrees of freedom: p = 1 - t / sqrt(t^2 + 2)
    t = 0.06 / math.sqrt(0.00005)
    assert weak["welch"]["p_value"] == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert report_row(report, "fixed")["welch"] is None


def _with_curve(results: dict, trial_id: str, accuracies: list[float]) -> dict:
    trial = next(t for t in results["trials"] if t["trial_id"] == trial_id)
    for point, accuracy in zip(trial["points"], accuracies, strict=True):
        point["accuracy"] = accuracy
    return results


def test_a_nan_accuracy_never_counts_as_crossing_the_target() -> None:
    results = against_baseline_results()
    # weak seed 0: nothing but NaN after its first evaluation; seed 1: above the target at
    # 200, NaN at 300, then above from 400 on. Only the crossing at 400 stays above, and the
    # NaN before it is no point to interpolate from: the crossing is 400 itself.
    _with_curve(results, "weak-s0", [0.5, NAN, NAN, NAN, NAN])
    _with_curve(results, "weak-s1", [0.5, 0.95, NAN, 0.95, 0.96])
    report = build_report(results)
    seeds = {s["seed"]: s for s in report_row(report, "weak")["seeds"]}
    assert seeds[0]["iterations_to_target"] is None
    assert seeds[0]["final_accuracy"] is None and seeds[0]["best_accuracy"] == 0.5
    assert seeds[1]["iterations_to_target"] == 400
    weak = report_row(report, "weak")
    assert _mean_reach(weak) == {"mean": 400, "reached": 1, "of": 2}
    assert weak["final_accuracy"]["n"] == 1  # the NaN final is no finished seed's accuracy
    json.dumps(report, allow_nan=False)


def test_cost_of_each_arm_by_hand() -> None:
    report = build_report(clr_vs_tuned_results((0.84, 0.85), (0.90, 0.91), range_test=3000))
    cost = {row["arm"]: row["cost"] for row in report["arms"]}
    assert (cost["sgd-fixed"]["range_test"], cost["sgd-fixed"]["total"]) == (0, 1000)
    assert cost["sgd-triangular"]["range_test"] == 3000
    assert cost["sgd-triangular"]["total"] == 3000 + 2 * 500
    assert cost["sgd-fixed-tuned"]["tuning"] == 2 * 250
    assert cost["sgd-fixed-tuned"]["total"] == 2 * 250 + 2 * 500
    assert report["cost"]["range_test_shared_by"] == ["sgd-triangular"]
    assert report["cost"]["total"] == 3000 + 500 + 3 * 1000


def test_the_clr_arm_against_the_tuned_fixed_lr_and_the_compute_ratio() -> None:
    report = build_report(clr_vs_tuned_results((0.84, 0.85), (0.90, 0.91), range_test=3000))
    match = clr_vs_tuned(report["arms"])
    assert match is not None
    assert (match["clr"]["arm"], match["candidates"], match["ranked"]) == ("sgd-triangular", 1, 1)
    (pair,) = match["pairs"]
    assert pair["fixed"]["arm"] == "sgd-fixed-tuned"
    t = 0.06 / math.sqrt(0.00005)
    assert pair["welch"]["p_value"] == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert pair["welch"]["sentence"].startswith("significantly lower")
    # The tuned arm's 1,500 iterations over the CLR arm's 4,000: CLR used more.
    assert pair["compute"] == {
        "ratio": pytest.approx(1500 / 4000),
        "per_seed": False,
        "clr": 4000,
        "fixed": 1500,
        "seeds": (2, 2),
    }


def test_the_compute_ratio_per_trained_model_when_seeds_differ() -> None:
    results = clr_vs_tuned_results((0.90, 0.91), (0.84, 0.85), range_test=3000)
    results["trials"] = [t for t in results["trials"] if t["trial_id"] != "sgd-fixed-tuned-s1"]
    report = build_report(results)
    clr, tuned = report_row(report, "sgd-triangular"), report_row(report, "sgd-fixed-tuned")
    # per trained model: CLR 3,000 + 1,000 / 2 = 3,500; tuned 500 + 500 / 1 = 1,000
    assert compute_ratio(clr, tuned) == {
        "ratio": pytest.approx(1000 / 3500),
        "per_seed": True,
        "clr": 3500,
        "fixed": 1000,
        "seeds": (2, 1),
    }


def test_the_best_finished_clr_arm_is_chosen_and_unfinished_ones_are_counted() -> None:
    results = clr_vs_tuned_results((0.84, 0.85), (0.90, 0.91), range_test=3000)
    results["arms"]["sgd-triangular2"] = {
        **results["arms"]["sgd-triangular"],
        "policy": {"name": "triangular2", "params": {"base_lr": 0.02, "max_lr": 0.08}},
    }
    cancelled = {"arm": "sgd-triangular2", "trial_id": "t2-s0", "state": "cancelled"}
    results["trials"].append({**results["trials"][1], **cancelled})
    match = clr_vs_tuned(build_report(results)["arms"])
    assert match is not None
    assert (match["clr"]["arm"], match["candidates"], match["ranked"]) == ("sgd-triangular", 2, 1)
    # Without any finished CLR seed the first CLR arm stands, and nothing is compared.
    results["trials"] = [
        {**t, "state": "cancelled"} if t["arm"] == "sgd-triangular" else t
        for t in results["trials"]
    ]
    match = clr_vs_tuned(build_report(results)["arms"])
    assert match is not None
    assert (match["clr"]["arm"], match["ranked"]) == ("sgd-triangular", 0)
    assert match["pairs"][0]["welch"] is None


def test_no_tuned_fixed_lr_arm_no_match() -> None:
    results = clr_vs_tuned_results((0.84, 0.85), (0.90, 0.91), range_test=3000)
    results["tuning"] = {}
    results["arms"]["sgd-fixed-tuned"]["tuned"] = []
    assert clr_vs_tuned(build_report(results)["arms"]) is None


def test_time_to_target_is_the_median_over_seeds_a_miss_counting_as_infinity() -> None:
    report = build_report(time_to_target_results())
    time = {row["arm"]: row["time_to_target"] for row in report["arms"]}
    assert time["sgd"] == {
        "median": pytest.approx(2.0),
        "ci_low": pytest.approx(2.0),
        "ci_high": pytest.approx(2.0),
        "unbounded": False,
        "reached": 5,
        "of": 5,
        "speedup": pytest.approx(1.0),
    }
    # Fewer iterations, more time: the arm worse than the baseline in time.
    assert time["prodigy"]["median"] == pytest.approx(5.0)
    assert time["prodigy"]["speedup"] == pytest.approx(2.0 / 5.0)
    assert report_row(report, "prodigy")["speedup"] == pytest.approx(200 / 100)
    # One miss of five: the median is finite, its interval's top is not (see the statistics).
    assert time["wsd"] == {
        "median": pytest.approx(4.0),
        "ci_low": pytest.approx(3.0),
        "ci_high": None,
        "unbounded": True,
        "reached": 4,
        "of": 5,
        "speedup": pytest.approx(2.0 / 4.0),
    }
    assert time["dog"]["median"] is None and time["dog"]["unbounded"]
    assert (time["dog"]["reached"], time["dog"]["speedup"]) == (2, None)
    json.dumps(report, allow_nan=False)


def test_iterations_to_target_get_the_median_beside_the_mean() -> None:
    report = build_report(time_to_target_results())
    wsd = report_row(report, "wsd")["iterations_to_target"]
    assert wsd["mean"] == pytest.approx(350)  # over the four seeds that reached it
    assert wsd["median"] == pytest.approx(400)  # over [300, 300, 400, 400, inf]
    assert (wsd["ci_low"], wsd["ci_high"], wsd["unbounded"]) == (300, None, True)
    assert report_row(report, "dog")["iterations_to_target"]["median"] is None


def test_seconds_per_iteration_and_total_training_time_per_arm() -> None:
    report = build_report(time_to_target_results())
    assert report_row(report, "sgd")["seconds_per_iteration"] == pytest.approx(0.01)
    assert report_row(report, "prodigy")["seconds_per_iteration"] == pytest.approx(0.05)
    assert report_row(report, "prodigy")["wall_s_total"] == pytest.approx(5 * 500 * 0.05)
    seeds = report_row(report, "prodigy")["seeds"]
    assert [s["time_to_target"] for s in seeds] == [pytest.approx(5.0)] * 5
