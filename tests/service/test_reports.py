"""Comparison reports built from hand-made results documents (docs/results-format.md)."""

from __future__ import annotations

import copy
import csv
import io
import json
from typing import Any

import pytest

from service.reports import build_report, render_csv, render_html
from service.reports.tables import CSV_COLUMNS
from tests.factories import (
    report_row,
    results_arm,
    results_document,
    results_trial,
    time_to_target_results,
)


def _results(status: str = "succeeded") -> dict[str, Any]:
    """fixed (baseline) ends at 0.90 in both seeds, so the target is 0.90, crossed at 400.

    triangular2 crosses at 250 (seed 0: 0.85 -> 0.95) and 180 (seed 1: 0.70 -> 0.95): mean 215.
    adam: seed 0 diverged, seed 1 failed, seed 2 ends at 0.88 (never reaches 0.90).
    Every trial is evaluated every 100 iterations from 100.
    """
    range_test = {
        "points": [
            {
                "iteration": i,
                "lr": 0.01 * (i + 1),
                "loss": 2.3 - 0.1 * i if i < 9 else float("inf"),
                "smoothed_loss": 2.3 - 0.1 * i,
                "accuracy": 0.1 + 0.08 * i if i % 2 == 0 else None,
                "eval_loss": None,
            }
            for i in range(10)
        ],
        "stopped_at": 10,
        "stop_reason": "diverged",
        "min_lr": 0.01,
        "max_lr": 0.1,
        "ramp": "linear",
        "node_id": None,
    }
    arms = {
        "fixed": results_arm("fixed", {"lr": 0.05}),
        "triangular2": results_arm(
            "triangular2",
            {"base_lr": 0.02, "max_lr": 0.08, "step_size": 100},
            ["base_lr", "max_lr"],
        ),
        "adam": results_arm("fixed", {"lr": 0.001}, optimizer="adam"),
    }
    trials = [
        results_trial("fixed", 0, [0.5, 0.7, 0.8, 0.9, 0.9]),
        results_trial("fixed", 1, [0.5, 0.7, 0.8, 0.9, 0.9]),
        results_trial("triangular2", 0, [0.6, 0.85, 0.95, 0.93, 0.94]),
        results_trial("triangular2", 1, [0.7, 0.95, 0.92, 0.96, 0.96]),
        results_trial("adam", 0, [0.5, 0.1], "diverged"),
        results_trial("adam", 1, [0.6], "failed"),
        results_trial("adam", 2, [0.6, 0.7, 0.8, 0.85, 0.88]),
    ]
    bounds = {"base_lr": 0.02, "max_lr": 0.08, "method": "accuracy", "reason": "rise & fall"}
    return results_document(arms, trials, status, range_test=range_test, bounds=bounds)


def test_target_defaults_to_the_baseline_final_mean() -> None:
    target = build_report(_results())["target"]
    assert target["accuracy"] == pytest.approx(0.9)
    assert target["source"] == "baseline"
    assert "next evaluation" in target["rule"]


def test_target_from_the_spec_is_used_as_given() -> None:
    results = _results()
    results["spec"]["target_accuracy"] = 0.85
    report = build_report(results)
    assert report["target"]["source"] == "spec"
    # fixed: 0.8 (300) -> 0.9 (400) crosses 0.85 at 350; adam seed 2 reaches 0.85 at 400.
    assert report_row(report, "fixed")["iterations_to_target"]["mean"] == pytest.approx(350)
    assert report_row(report, "adam")["iterations_to_target"]["reached"] == 1


def test_speedup_and_iterations_to_target() -> None:
    report = build_report(_results())
    base, clr = report_row(report, "fixed"), report_row(report, "triangular2")
    assert base["iterations_to_target"] == {
        "mean": pytest.approx(400),
        "reached": 2,
        "of": 2,
        # AlgoPerf's median beside the mean: both seeds crossed at 400.
        "median": pytest.approx(400),
        "ci_low": pytest.approx(400),
        "ci_high": pytest.approx(400),
        "unbounded": False,
    }
    assert clr["iterations_to_target"]["mean"] == pytest.approx(215)
    assert clr["speedup"] == pytest.approx(400 / 215)
    assert base["speedup"] == pytest.approx(1.0)


def test_diverged_counts_as_not_reaching_and_failed_is_excluded() -> None:
    adam = report_row(build_report(_results()), "adam")
    assert adam["iterations_to_target"] == {
        "mean": None,
        "reached": 0,
        "of": 2,
        # Every seed missed: the median is infinite, no number.
        "median": None,
        "ci_low": None,
        "ci_high": None,
        "unbounded": True,
    }
    assert adam["speedup"] is None
    assert adam["final_accuracy"]["n"] == 2  # diverged (0.1) and completed (0.88), not failed
    assert adam["final_accuracy"]["mean"] == pytest.approx((0.1 + 0.88) / 2)
    assert (adam["diverged"], adam["failed"]) == (1, 1)
    # past its end a diverged trial keeps its final accuracy, as in the finals
    assert adam["accuracy_at_budget"][3] == {
        "fraction": 1.0,
        "iteration": 500,
        "mean": pytest.approx((0.1 + 0.88) / 2),
        "n": 2,
    }


def test_params_are_marked_given_or_from_the_range_test() -> None:
    params = report_row(build_report(_results()), "triangular2")["params"]
    assert {p["name"]: p["source"] for p in params} == {
        "base_lr": "range test",
        "max_lr": "range test",
        "step_size": "given",
    }


def test_accuracy_at_fractions_of_the_baseline_budget() -> None:
    cells = report_row(build_report(_results()), "triangular2")["accuracy_at_budget"]
    assert [c["iteration"] for c in cells] == [125, 250, 375, 500]
    # at 125: seed 0 0.6 -> 0.85 gives 0.6625, seed 1 0.7 -> 0.95 gives 0.7625
    assert cells[0]["mean"] == pytest.approx(0.7125)
    assert cells[3]["mean"] == pytest.approx(0.95)


def test_verdicts_name_the_right_arms_and_figures() -> None:
    verdicts = build_report(_results())["verdicts"]
    assert (
        "triangular2 reached the baseline's final accuracy (90.0%) at 215 iterations, "
        "1.9x fewer than fixed (400)." in verdicts
    )
    assert any(v.startswith("adam never reached") and "0 of 2 seeds" in v for v in verdicts)
    assert "adam: 1 of 3 trials diverged and 1 of 3 trials failed." in verdicts
    assert not any("fixed reached" in v for v in verdicts)


def test_welch_sentence_is_plain() -> None:
    report = build_report(_results())
    welch = report_row(report, "triangular2")["welch"]
    # [0.94, 0.96] vs [0.90, 0.90]: t = 0.05 / 0.01 = 5 with 1 degree of freedom.
    assert welch["against"] == "fixed"
    assert welch["p_value"] == pytest.approx(0.1257, abs=1e-4)
    assert welch["sentence"] == "no significant difference at 5% (p = 0.126)"
    assert report_row(report, "fixed")["welch"] is None


def test_welch_sentence_says_higher_when_significant() -> None:
    results = _results()
    results["trials"][1]["points"][-1]["accuracy"] = 0.91  # fixed: [0.90, 0.91]
    results["trials"][2]["points"][-1]["accuracy"] = 0.96
    results["trials"][3]["points"][-1]["accuracy"] = 0.97  # triangular2: [0.96, 0.97]
    welch = report_row(build_report(results), "triangular2")["welch"]
    # diff 0.06, sample variances 0.00005 each: se = sqrt(2 * 0.00005 / 2) = 0.00707,
    # t = 8.485, df = 2: p = 2 * t.sf(8.485, 2) = 0.0136
    assert welch["p_value"] == pytest.approx(0.0136, abs=1e-4)
    assert welch["sentence"] == "significantly higher at 5% (p = 0.014)"


def test_single_seed_has_no_ci_and_no_test() -> None:
    results = _results()
    results["trials"] = [t for t in results["trials"] if t["seed"] == 0]
    report = build_report(results)
    clr = report_row(report, "triangular2")
    assert clr["final_accuracy"]["ci_low"] is None
    assert clr["final_accuracy"]["note"] == "one seed: no confidence interval"
    assert clr["welch"]["p_value"] is None
    assert clr["welch"]["sentence"].startswith("not tested: needs 2 or more finished seeds")


def test_identical_results_are_said_plainly() -> None:
    results = _results()
    for trial in results["trials"]:
        if trial["arm"] == "triangular2":
            trial["points"] = copy.deepcopy(results["trials"][0]["points"])
    welch = report_row(build_report(results), "triangular2")["welch"]
    assert welch["p_value"] is None
    assert welch["sentence"].startswith("identical results")


def test_running_study_is_partial() -> None:
    results = _results(status="running")
    results["trials"][-1]["state"] = "running"
    report = build_report(results)
    assert report["partial"] is True
    assert report["verdicts"][0].startswith("Partial report: the study is running; 5 of 7")
    assert build_report(_results())["partial"] is False


def test_study_without_finished_trials_says_so() -> None:
    results = _results(status="running")
    for trial in results["trials"]:
        trial["state"] = "pending" if trial["seed"] else "running"
    # bounds not derived yet: the range test is still running
    results["arms"]["triangular2"]["policy"]["params"].update(base_lr="auto", max_lr="auto")
    results["bounds"] = None
    report = build_report(results)
    assert report["target"]["accuracy"] is None
    assert "No trial has finished: there is nothing to compare yet." in report["verdicts"]
    assert all(r["final_accuracy"]["mean"] is None for r in report["arms"])
    json.dumps(report, allow_nan=False)
    assert 'id="summary"' in render_html(results, report)


def test_report_is_strict_json() -> None:
    report = build_report(_results())
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text)["range_test"]["points"][9]["loss"] is None  # inf became None
    assert report["bounds"]["method"] == "accuracy"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(format=2), "format must be 1"),
        (lambda r: r["spec"].update(baseline="sgd"), "spec.baseline 'sgd' is not an arm"),
        (lambda r: r["trials"][0].update(arm="x"), r"trials\[0\].arm 'x' is not an arm"),
        (lambda r: r["spec"].update(target_accuracy=97), "spec.target_accuracy"),
    ],
)
def test_bad_documents_are_refused_naming_the_field(change: Any, message: str) -> None:
    results = _results()
    change(results)
    with pytest.raises(ValueError, match=message):
        build_report(results)


def test_csv_has_one_row_per_evaluation_point() -> None:
    results = _results()
    rows = list(csv.reader(io.StringIO(render_csv(results))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) - 1 == sum(len(t["points"]) for t in results["trials"])
    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert (first["study"], first["arm"], first["seed"], first["iteration"]) == (
        "st_1",
        "fixed",
        "0",
        "100",
    )


def test_html_is_self_contained_with_summary_plots_and_escaped_names() -> None:
    results = _results()
    evil = '<script>alert("$1")</script>'
    results["arms"][evil] = results["arms"].pop("adam")
    for trial in results["trials"]:
        if trial["arm"] == "adam":
            trial["arm"] = evil
    page = render_html(results)
    assert '<table id="summary">' in page
    assert page.count('class="plot"') == 3
    assert page.count("<svg") == 3
    assert "<script" not in page and "<link" not in page
    assert "&lt;script&gt;" in page
    assert 'id="partial"' not in page
    assert "1.9x fewer than fixed (400)" in page


def test_html_of_a_running_study_shows_the_partial_banner() -> None:
    results = _results(status="running")
    results["range_test"] = None
    results["bounds"] = None
    page = render_html(results)
    assert 'id="partial"' in page
    assert page.count("<svg") == 2  # no range test, no third plot
    assert "No range test" in page


def test_the_estimated_step_size_is_plotted_when_an_arm_recorded_one() -> None:
    results = time_to_target_results()
    assert 'id="plot-step-size"' not in render_html(results)
    for trial in results["trials"]:
        if trial["arm"] == "prodigy":
            for point in trial["points"]:
                point["d"] = 1e-6 * (1 + point["iteration"])
    page = render_html(results)
    assert 'id="plot-step-size"' in page
    assert "estimated step size d" in page
    summary = page[page.index('id="summary"') :]
    assert "50.00 ms" in summary  # prodigy's training time per iteration
    assert "5.00 s [5.00 s, 5.00 s] (5/5)" in summary  # its median time to target
    assert "4.00 s [3.00 s, ∞] (4/5)" in summary  # wsd: one seed of five missed
