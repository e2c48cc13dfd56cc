"""Regressions between two runs of a schedule, from their comparison reports.

A regression: an arm's final accuracy mean falls below the previous run's 95% CI low (with
one previous seed, no CI: by more than `points_threshold` percentage points); or its
iterations to target rise by more than `iterations_fraction`, or the target is no longer
reached at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_POINTS_THRESHOLD = 2.0  # percentage points of final accuracy, for one-seed runs
DEFAULT_ITERATIONS_FRACTION = 0.25  # rise of iterations to target that counts as a regression


def _headline(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["arm"]: row for row in report.get("arms") or ()}


def compare_runs(
    previous_report: Mapping[str, Any],
    current_report: Mapping[str, Any],
    *,
    points_threshold: float = DEFAULT_POINTS_THRESHOLD,
    iterations_fraction: float = DEFAULT_ITERATIONS_FRACTION,
) -> list[dict[str, Any]]:
    """Per arm of the current report: deltas against the previous one and whether it regressed
    (see the module docstring). Arms new in the current report have nothing to compare with.
    """
    before = _headline(previous_report)
    deltas = []
    for arm, row in _headline(current_report).items():
        final = row["final_accuracy"]["mean"]
        its = row["iterations_to_target"]["mean"]
        old = before.get(arm)
        entry: dict[str, Any] = {
            "arm": arm,
            "final_accuracy": final,
            "previous_final_accuracy": None,
            "previous_ci_low": None,
            "final_accuracy_delta_points": None,
            "iterations_to_target": its,
            "previous_iterations_to_target": None,
            "iterations_change": None,
            "regression": False,
            "reasons": [],
        }
        if old is None:
            entry["reasons"] = ["new arm: nothing to compare with"]
            deltas.append(entry)
            continue
        old_final = old["final_accuracy"]
        old_its = old["iterations_to_target"]["mean"]
        entry["previous_final_accuracy"] = old_final["mean"]
        entry["previous_ci_low"] = old_final["ci_low"]
        entry["previous_iterations_to_target"] = old_its
        problems = []
        if final is not None and old_final["mean"] is not None:
            drop = 100 * (old_final["mean"] - final)
            entry["final_accuracy_delta_points"] = -drop
            if old_final["ci_low"] is not None:
                if final < old_final["ci_low"]:
                    problems.append(
                        f"final accuracy {100 * final:.1f}% is below the previous run's 95% "
                        f"interval (from {100 * old_final['ci_low']:.1f}%)"
                    )
            elif drop > points_threshold:
                problems.append(
                    f"final accuracy fell {drop:.1f} points (more than {points_threshold:g}) "
                    f"from {100 * old_final['mean']:.1f}% to {100 * final:.1f}%"
                )
        elif final is None and old_final["mean"] is not None:
            problems.append("no seed finished, the previous run had a final accuracy")
        if old_its is not None:
            if its is None:
                problems.append("no longer reaches the target accuracy")
            else:
                change = its / old_its - 1
                entry["iterations_change"] = change
                if change > iterations_fraction:
                    problems.append(
                        f"iterations to target rose {100 * change:.0f}% (more than "
                        f"{100 * iterations_fraction:.0f}%) from {old_its:,.0f} to {its:,.0f}"
                    )
        entry["regression"] = bool(problems)
        entry["reasons"] = problems
        deltas.append(entry)
    return deltas


def headline_figures(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per arm: final accuracy mean and 95% CI, iterations to target, speedup vs baseline."""
    return [
        {
            "arm": row["arm"],
            "final_accuracy": row["final_accuracy"]["mean"],
            "ci_low": row["final_accuracy"]["ci_low"],
            "ci_high": row["final_accuracy"]["ci_high"],
            "iterations_to_target": row["iterations_to_target"]["mean"],
            "speedup": row["speedup"],
        }
        for row in report.get("arms") or ()
    ]


def latest_comparison(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The newest run's comparison with its predecessor, from a schedule's history entries
    (newest first, as `service.scheduling.history` gives them)."""
    for entry in entries:
        if entry["comparison"] is not None:
            return {"due_at": entry["due_at"], "study_id": entry["study_id"], **entry["comparison"]}
    return None
