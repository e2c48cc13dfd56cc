"""Regressions between two runs of a schedule, from hand-made reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from service.reports.regressions import compare_runs, headline_figures, latest_comparison
from service.reports.statistics import mean_ci


def report(arms: Mapping[str, tuple[Sequence[float], float | None]]) -> dict[str, Any]:
    """A hand-made report: per arm, its seeds' final accuracies and iterations to target."""
    rows = []
    for name, (finals, iterations) in arms.items():
        mean, low, high = mean_ci(finals)
        rows.append(
            {
                "arm": name,
                "final_accuracy": {"mean": mean, "ci_low": low, "ci_high": high, "n": len(finals)},
                "iterations_to_target": {"mean": iterations},
                "speedup": None,
            }
        )
    return {"arms": rows}


def by_arm(deltas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["arm"]: d for d in deltas}


def test_final_accuracy_below_the_previous_interval_is_a_regression() -> None:
    before = report({"fixed": ([0.90, 0.91, 0.92], 100.0), "clr": ([0.93, 0.94, 0.95], 50.0)})
    after = report({"fixed": ([0.905, 0.91, 0.915], 100.0), "clr": ([0.90, 0.91, 0.92], 50.0)})
    deltas = by_arm(compare_runs(before, after))
    assert not deltas["fixed"]["regression"] and deltas["fixed"]["reasons"] == []
    assert deltas["clr"]["regression"]
    assert "below the previous run's 95% interval" in deltas["clr"]["reasons"][0]
    assert deltas["clr"]["final_accuracy_delta_points"] == pytest.approx(-3.0)


def test_the_interval_reason_names_both_figures() -> None:
    # [0.93, 0.94, 0.95]: mean 0.94, s = 0.01, t(0.975, 2) = 4.3027: low = 0.94 - 0.02484
    before = report({"clr": ([0.93, 0.94, 0.95], 50.0)})
    (delta,) = compare_runs(before, report({"clr": ([0.90, 0.91, 0.92], 50.0)}))
    assert delta["previous_ci_low"] == pytest.approx(0.94 - 4.3027 * 0.01 / 3**0.5, abs=1e-4)
    assert delta["reasons"] == [
        "final accuracy 91.0% is below the previous run's 95% interval (from 91.5%)"
    ]
    # Within the interval, even below the mean: no regression.
    (delta,) = compare_runs(before, report({"clr": ([0.92, 0.92, 0.92], 50.0)}))
    assert delta["regression"] is False
    assert delta["final_accuracy_delta_points"] == pytest.approx(-2.0)


def test_with_one_seed_the_points_threshold_decides() -> None:
    before, after = report({"fixed": ([0.90], None)}), report({"fixed": ([0.87], None)})
    (delta,) = compare_runs(before, after)
    assert delta["regression"]
    assert delta["reasons"] == ["final accuracy fell 3.0 points (more than 2) from 90.0% to 87.0%"]
    (delta,) = compare_runs(before, after, points_threshold=5.0)
    assert not delta["regression"]


def test_with_one_seed_a_rise_is_no_regression() -> None:
    (delta,) = compare_runs(report({"fixed": ([0.87], None)}), report({"fixed": ([0.90], None)}))
    assert delta["regression"] is False
    assert delta["final_accuracy_delta_points"] == pytest.approx(3.0)


def test_more_iterations_to_target_or_none_at_all_is_a_regression() -> None:
    before = report({"a": ([0.9, 0.9], 1000.0), "b": ([0.9, 0.9], 1000.0), "c": ([0.9], 1000.0)})
    after = report({"a": ([0.9, 0.9], 1200.0), "b": ([0.9, 0.9], 1300.0), "c": ([0.9], None)})
    deltas = by_arm(compare_runs(before, after))
    assert not deltas["a"]["regression"] and deltas["a"]["iterations_change"] == pytest.approx(0.2)
    assert deltas["b"]["regression"]
    assert deltas["b"]["reasons"] == [
        "iterations to target rose 30% (more than 25%) from 1,000 to 1,300"
    ]
    assert deltas["c"]["reasons"] == ["no longer reaches the target accuracy"]
    assert by_arm(compare_runs(before, after, iterations_fraction=0.5))["b"]["regression"] is False


def test_fewer_iterations_to_target_is_no_regression() -> None:
    before, after = report({"a": ([0.9, 0.9], 1000.0)}), report({"a": ([0.9, 0.9], 500.0)})
    (delta,) = compare_runs(before, after)
    assert delta["regression"] is False and delta["iterations_change"] == pytest.approx(-0.5)


def test_a_new_arm_has_nothing_to_compare_with() -> None:
    (delta,) = compare_runs(report({}), report({"new": ([0.5], 10.0)}))
    assert delta["regression"] is False and delta["previous_final_accuracy"] is None
    assert delta["reasons"] == ["new arm: nothing to compare with"]


def test_headline_figures_and_the_latest_comparison() -> None:
    figures = headline_figures(report({"a": ([0.8, 0.9], 100.0)}))
    assert figures == [
        {
            "arm": "a",
            "final_accuracy": pytest.approx(0.85),
            "ci_low": pytest.approx(0.85 - 12.706 * 0.0707107 / 2**0.5, abs=1e-3),
            "ci_high": pytest.approx(0.85 + 12.706 * 0.0707107 / 2**0.5, abs=1e-3),
            "iterations_to_target": 100.0,
            "speedup": None,
        }
    ]
    newer = {"due_at": "2026-03-03", "study_id": "b", "comparison": None}
    older = {"due_at": "2026-03-02", "study_id": "a", "comparison": {"regression": True}}
    assert latest_comparison([newer, older]) == {
        "due_at": "2026-03-02",
        "study_id": "a",
        "regression": True,
    }
    assert latest_comparison([newer]) is None
