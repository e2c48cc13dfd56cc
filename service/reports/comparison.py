"""The comparison report: every figure of a study, JSON-ready, computed from `results.json`.

See docs/results-format.md for the input. Statistics use finished trials only: completed
and diverged ones (a diverged trial counts as not reaching the target). Failed and cancelled
trials are counted, never averaged. The report never carries NaN: missing figures are None.

Time to target follows AlgoPerf: per arm, the median over seeds of the training seconds to the
target, where a seed that never reaches it counts as infinity (never as the budget), with a
percentile bootstrap interval of that median; iterations to target get the same statistic
beside their mean over the seeds that reached it. An infinite figure is None in the report,
with `unbounded` true.

Each arm's cost is counted in training iterations: the range test (charged in full to every arm
that takes bounds from it: each would need it alone), its tuning trials (an Optuna search,
stopped-early and interrupted trials included: they were spent) and its final trials.

The report's sentences (verdicts, Welch's results in words, notes) are written by
`service.reports.verdicts` from the numbers computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.reports.statistics import (
    accuracy_at,
    bootstrap_median_ci,
    iterations_to_target,
    mean_ci,
    median_with_misses,
    time_to_target,
    welch_t_test,
)
from service.reports.verdicts import (
    CROSSING_RULE,
    cost_note,
    target_description,
    verdicts,
    welch_sentence,
)
from workers.results import finite as _finite
from workers.states import (
    FINISHED_TRIAL_STATES,
    TERMINAL_STUDY_STATUSES,
    TRIAL_STATES,
    TUNING_TRIAL_STATES,
)

# 2: time to target, the median of iterations to target, seconds per iteration (issue 15);
# reports cached in another format are built again.
REPORT_FORMAT = 2
CLR_POLICIES = ("triangular", "triangular2", "exp_range")
BUDGET_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def trial_curve(trial: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A trial's evaluation iterations and held-out accuracies, as float arrays."""
    points: Sequence[Mapping[str, Any]] = trial.get("points") or ()
    its = np.fromiter((p["iteration"] for p in points), dtype=float, count=len(points))
    acc = np.fromiter((p["accuracy"] for p in points), dtype=float, count=len(points))
    return its, acc


def trial_seconds(trial: Mapping[str, Any]) -> np.ndarray:
    """A trial's training seconds at each evaluation (`elapsed_s`), as a float array."""
    points: Sequence[Mapping[str, Any]] = trial.get("points") or ()
    seconds = (_finite(p.get("elapsed_s")) for p in points)
    return np.fromiter(
        (np.nan if v is None else v for v in seconds), dtype=float, count=len(points)
    )


def with_arms(results: Mapping[str, Any]) -> Mapping[str, Any]:
    """`results`, with the spec's arms as given where they are not resolved yet.

    A queued study, or one in its range test, has no resolved arms; its (partial) report
    still lists the arms it will compare.
    """
    if results.get("arms"):
        return results
    spec = results.get("spec") or {}
    arms = {
        arm["name"]: {
            "optimizer": arm.get("optimizer"),
            "policy": arm.get("policy"),
            "auto": [
                k for k, v in (arm.get("policy") or {}).get("params", {}).items() if v == "auto"
            ],
            # A validated spec marks every searched parameter "tuned".
            "tuned": [
                k for k, v in (arm.get("policy") or {}).get("params", {}).items() if v == "tuned"
            ],
            "iterations": arm.get("iterations") or spec.get("iterations"),
            "cycle_momentum": arm.get("cycle_momentum", False),
        }
        for arm in spec.get("arms") or ()
    }
    return {**results, "arms": arms}


def baseline_arm(results: Mapping[str, Any]) -> str | None:
    """The spec's baseline arm; the first arm when the spec names none; None without arms."""
    arms = list(results.get("arms") or {})
    baseline = (results.get("spec") or {}).get("baseline")
    if baseline is not None and baseline not in arms:
        raise ValueError(f"spec.baseline {baseline!r} is not an arm; arms: {', '.join(arms)}")
    return baseline if baseline is not None else (arms[0] if arms else None)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _check(results: Mapping[str, Any]) -> None:
    if results.get("format") != 1:
        raise ValueError(f"results format must be 1, got {results.get('format')!r}")
    arms = results.get("arms") or {}
    for i, trial in enumerate(results.get("trials") or ()):
        if trial.get("arm") not in arms:
            raise ValueError(
                f"trials[{i}].arm {trial.get('arm')!r} is not an arm; arms: {', '.join(arms)}"
            )
        if trial.get("state") not in TRIAL_STATES:
            raise ValueError(
                f"trials[{i}].state must be one of {', '.join(TRIAL_STATES)}, "
                f"got {trial.get('state')!r}"
            )
    for name, entry in (results.get("tuning") or {}).items():
        if name not in arms:
            raise ValueError(f"tuning.{name} is not an arm; arms: {', '.join(arms)}")
        for i, trial in enumerate((entry or {}).get("trials") or ()):
            if trial.get("state") not in TUNING_TRIAL_STATES:
                raise ValueError(
                    f"tuning.{name}.trials[{i}].state must be one of "
                    f"{', '.join(TUNING_TRIAL_STATES)}, got {trial.get('state')!r}"
                )


def _final_accuracies(trials: Sequence[Mapping[str, Any]]) -> list[float]:
    """Final held-out accuracies of the finished trials that have a finite one."""
    finals = []
    for trial in trials:
        points = trial.get("points")
        if trial["state"] in FINISHED_TRIAL_STATES and points:
            final = _finite(points[-1].get("accuracy"))
            if final is not None:
                finals.append(final)
    return finals


def _seed_row(trial: Mapping[str, Any], target: float | None) -> dict[str, Any]:
    its, acc = trial_curve(trial)
    seconds = trial_seconds(trial)
    finite = acc[np.isfinite(acc)]
    trained = its.size and its[-1] > 0 and np.isfinite(seconds[-1])
    return {
        "seed": trial.get("seed"),
        "trial_id": trial.get("trial_id"),
        "state": trial["state"],
        "final_accuracy": _finite(acc[-1]) if acc.size else None,
        "best_accuracy": float(finite.max()) if finite.size else None,
        "iterations_to_target": (
            iterations_to_target(its, acc, target) if target is not None else None
        ),
        "time_to_target": (
            time_to_target(its, acc, seconds, target) if target is not None else None
        ),
        "seconds_per_iteration": float(seconds[-1] / its[-1]) if trained else None,
        "wall_s": _finite(trial.get("wall_s")),
    }


def median_to_target(values: Sequence[float | None]) -> dict[str, Any]:
    """AlgoPerf's statistic of per-seed figures to the target (None: a miss, counted as
    infinity): the median, how many reached it, and a bootstrap 95% interval of the median.
    Infinite figures are None, `unbounded` saying the median or the interval's top is."""
    if not values:
        return {"median": None, "ci_low": None, "ci_high": None, "unbounded": False}
    median = median_with_misses(values)
    interval = bootstrap_median_ci(values)
    low, high = interval if interval is not None else (None, None)
    return {
        "median": _finite(median),
        "ci_low": _finite(low),
        "ci_high": _finite(high),
        "unbounded": not np.isfinite(median) or (high is not None and not np.isfinite(high)),
    }


def _accuracy_at(state: str, its: np.ndarray, acc: np.ndarray, iteration: float) -> float | None:
    # A diverged trial stopped training: past its end it keeps its final accuracy, as in finals.
    if state == "diverged" and its.size and iteration > its[-1]:
        return _finite(acc[-1])
    return accuracy_at(its, acc, iteration)


def _welch(arm: str, finals: Sequence[float], base: str, base_finals: Sequence[float]) -> dict:
    """Welch's test of the arm's final accuracies against the base's, with its sentence."""
    p = welch_t_test(finals, base_finals)
    difference = float(np.mean(finals) - np.mean(base_finals)) if finals and base_finals else None
    sentence = welch_sentence(arm, base, len(finals), len(base_finals), p, difference)
    return {"against": base, "p_value": p, "sentence": sentence}


def _iterations(value: Any) -> int:
    """An iteration count of the document; 0 where it is missing."""
    number = _finite(value)
    return int(number) if number is not None and number > 0 else 0


def range_test_iterations(results: Mapping[str, Any]) -> int:
    """The range test's iterations run: `stopped_at`, else its points so far; 0 without one."""
    test = results.get("range_test")
    if not test:
        return 0
    if _finite(test.get("stopped_at")) is not None:
        return _iterations(test["stopped_at"])
    return len(test.get("points") or ())


def _cost(
    arm: Mapping[str, Any],
    trials: Sequence[Mapping[str, Any]],
    tuning: Mapping[str, Any] | None,
    range_test: int,
) -> dict[str, Any]:
    """What the arm cost, in training iterations (see the module's docstring)."""
    charged = range_test if arm.get("auto") else 0
    tuning_trials: Sequence[Mapping[str, Any]] = (tuning or {}).get("trials") or ()
    tuned = sum(_iterations(t.get("iterations_done")) for t in tuning_trials)
    spent = [_iterations(t.get("iterations_done")) for t in trials]
    seeds = sum(1 for s in spent if s > 0)
    trained = sum(spent)
    return {
        "range_test": charged,
        "tuning": tuned,
        "trials": trained,
        "total": charged + tuned + trained,
        "tuning_trials": len(tuning_trials),
        "stopped_early": sum(t.get("state") == "stopped" for t in tuning_trials),
        "seeds_ran": seeds,
        "per_seed_total": charged + tuned + trained / seeds if seeds else None,
    }


def _tuning(entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A tuned arm's search: its best trial, counts by state, and every tuning trial."""
    if entry is None:
        return None
    trials = sorted(entry.get("trials") or (), key=lambda t: t.get("number") or 0)
    best = entry.get("best")
    best_number = best.get("number") if best else None
    states = {state: sum(t.get("state") == state for t in trials) for state in TUNING_TRIAL_STATES}
    return {
        "optuna_study": entry.get("optuna_study"),
        "trials_planned": entry.get("trials_planned"),
        "max_iterations": entry.get("max_iterations"),
        "space": dict(entry.get("space") or {}),
        "best": (
            {
                "number": best_number,
                "params": dict(best.get("params") or {}),
                "value": _finite(best.get("value")),
            }
            if best
            else None
        ),
        "states": states,
        # interrupted trials were replaced by others: they do not count towards trials_planned
        "ended": len(trials) - states["interrupted"],
        "trials": [
            {
                "number": t.get("number"),
                "params": dict(t.get("params") or {}),
                "state": t.get("state"),
                "iterations_done": _iterations(t.get("iterations_done")),
                "value": _finite(t.get("value")),
                "wall_s": _finite(t.get("wall_s")),
                "error": t.get("error"),
                "best": best_number is not None and t.get("number") == best_number,
            }
            for t in trials
        ],
    }


def _source(name: str, auto: set[str], tuned: set[str]) -> str:
    return "tuned" if name in tuned else "range test" if name in auto else "given"


def _arm_row(
    name: str,
    arm: Mapping[str, Any],
    trials: Sequence[Mapping[str, Any]],
    target: float | None,
    budget_iterations: Sequence[float],
    tuning: Mapping[str, Any],
    range_test: int,
) -> dict[str, Any]:
    finished = [t for t in trials if t["state"] in FINISHED_TRIAL_STATES]
    seeds = [_seed_row(t, target) for t in finished]
    finals = _final_accuracies(finished)
    if finals:
        mean, low, high = mean_ci(finals)
        final: dict[str, Any] = {"mean": mean, "ci_low": low, "ci_high": high, "n": len(finals)}
        final["note"] = "one seed: no confidence interval" if len(finals) == 1 else None
    else:
        final = {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "note": "no finished seed"}
    reached = [s["iterations_to_target"] for s in seeds if s["iterations_to_target"] is not None]
    times = [s["time_to_target"] for s in seeds]
    per_iteration = [s["seconds_per_iteration"] for s in seeds if s["seconds_per_iteration"]]
    bests = [s["best_accuracy"] for s in seeds if s["best_accuracy"] is not None]
    walls = [s["wall_s"] for s in seeds if s["wall_s"] is not None]
    at_budget = []
    curves = [(trial["state"], *trial_curve(trial)) for trial in finished]
    for fraction, iteration in zip(BUDGET_FRACTIONS, budget_iterations, strict=True):
        values = [
            v
            for state, its, acc in curves
            if (v := _accuracy_at(state, its, acc, iteration)) is not None
        ]
        at_budget.append(
            {"fraction": fraction, "iteration": iteration, "mean": _mean(values), "n": len(values)}
        )
    auto = set(arm.get("auto") or ())
    tuned = set(arm.get("tuned") or ())
    policy = arm.get("policy") or {}
    optimizer = arm.get("optimizer") or {}
    counts = {state: sum(t["state"] == state for t in trials) for state in TRIAL_STATES}
    return {
        "arm": name,
        "optimizer": optimizer.get("name"),
        "optimizer_options": dict(optimizer.get("options") or {}),
        "policy": policy.get("name"),
        "params": [
            {"name": k, "value": v, "source": _source(k, auto, tuned)}
            for k, v in (policy.get("params") or {}).items()
        ],
        "iterations": arm.get("iterations"),
        "trials": counts,
        "finished": len(finished),
        "final_accuracy": final,
        "best_accuracy": max(bests) if bests else None,
        "iterations_to_target": {
            "mean": _mean(reached),
            "reached": len(reached),
            "of": len(finished),
            **(
                median_to_target([s["iterations_to_target"] for s in seeds])
                if target is not None
                else median_to_target([])
            ),
        },
        "speedup": None,
        "time_to_target": {
            **(median_to_target(times) if target is not None else median_to_target([])),
            "reached": sum(t is not None for t in times),
            "of": len(finished),
            "speedup": None,
        },
        "seconds_per_iteration": _mean(per_iteration),
        "wall_s_mean": _mean(walls),
        "wall_s_total": sum(walls) if walls else None,
        "diverged": counts["diverged"],
        "failed": counts["failed"],
        "accuracy_at_budget": at_budget,
        "welch": None,
        "cost": _cost(arm, trials, tuning.get(name), range_test),
        "tuning": _tuning(tuning.get(name)),
        "seeds": seeds,
    }


def _target(results: Mapping[str, Any], baseline_trials: Sequence[Mapping[str, Any]]) -> dict:
    given = (results.get("spec") or {}).get("target_accuracy", "auto")
    baseline = baseline_arm(results)
    if given is None or given == "auto":
        accuracy = _mean(_final_accuracies(baseline_trials))
        source = "baseline"
    else:
        accuracy = _finite(given)
        if accuracy is None or not 0 < accuracy <= 1:
            raise ValueError(
                f"spec.target_accuracy must be 'auto' or a fraction in (0, 1], got {given!r}"
            )
        source = "spec"
    return {
        "accuracy": accuracy,
        "source": source,
        "description": target_description(source, baseline, accuracy),
    }


def _study_cost(rows: Sequence[Mapping[str, Any]], range_test: int) -> dict[str, Any]:
    """What the study spent, the range test once, and how arms are charged for it."""
    sharing = [row["arm"] for row in rows if row["cost"]["range_test"]]
    tuned = sum(row["cost"]["tuning"] for row in rows)
    trained = sum(row["cost"]["trials"] for row in rows)
    return {
        "range_test": range_test,
        "range_test_shared_by": sharing,
        "tuning": tuned,
        "trials": trained,
        "total": range_test + tuned + trained,
        "note": cost_note(range_test, sharing),
    }


def _is_tuned(row: Mapping[str, Any]) -> bool:
    return row["tuning"] is not None or any(p["source"] == "tuned" for p in row["params"])


def _finals(row: Mapping[str, Any]) -> list[float]:
    return [s["final_accuracy"] for s in row["seeds"] if s["final_accuracy"] is not None]


def compute_ratio(clr: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fixed arm's iterations over the CLR arm's: on totals, or per trained model when the
    two arms trained different numbers of seeds; None when a total is 0."""
    a, b = clr["cost"], fixed["cost"]
    per_seed = a["seeds_ran"] != b["seeds_ran"]
    mine, theirs = (
        (a["per_seed_total"], b["per_seed_total"]) if per_seed else (a["total"], b["total"])
    )
    if not mine or not theirs:
        return None
    return {
        "ratio": theirs / mine,
        "per_seed": per_seed,
        "clr": mine,
        "fixed": theirs,
        "seeds": (a["seeds_ran"], b["seeds_ran"]),
    }


def clr_vs_tuned(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """What "CLR with one range test vs tuned fixed LR" compares: the untuned CLR arm with
    range-test bounds of the best final accuracy (else the first), against each tuned fixed-LR
    arm, with Welch's test and the compute ratio; None without both kinds of arm."""
    fixed_rows = [r for r in rows if r["policy"] == "fixed" and _is_tuned(r)]
    clr_rows = [
        r
        for r in rows
        if r["policy"] in CLR_POLICIES
        and not _is_tuned(r)
        and any(p["source"] == "range test" for p in r["params"])
    ]
    if not fixed_rows or not clr_rows:
        return None
    ranked = [r for r in clr_rows if r["final_accuracy"]["mean"] is not None]
    clr = max(ranked, key=lambda r: r["final_accuracy"]["mean"]) if ranked else clr_rows[0]
    pairs = []
    for fixed in fixed_rows:
        compared = None not in (clr["final_accuracy"]["mean"], fixed["final_accuracy"]["mean"])
        pairs.append(
            {
                "fixed": fixed,
                "welch": (
                    _welch(clr["arm"], _finals(clr), fixed["arm"], _finals(fixed))
                    if compared
                    else None
                ),
                "compute": compute_ratio(clr, fixed),
            }
        )
    return {"clr": clr, "candidates": len(clr_rows), "ranked": len(ranked), "pairs": pairs}


def _range_test(results: Mapping[str, Any]) -> dict[str, Any] | None:
    test = results.get("range_test")
    if test is None:
        return None
    fields = ("iteration", "lr", "loss", "smoothed_loss", "accuracy", "eval_loss")
    return {
        "points": [{k: _finite(p.get(k)) for k in fields} for p in test.get("points") or ()],
        "stopped_at": test.get("stopped_at"),
        "stop_reason": test.get("stop_reason"),
        "min_lr": _finite(test.get("min_lr")),
        "max_lr": _finite(test.get("max_lr")),
        "ramp": test.get("ramp"),
    }


def build_report(results: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison report of a results document (docs/results-format.md), JSON-ready.

    Raises ValueError naming the field when the document is not one this version reads.
    """
    results = with_arms(results)
    _check(results)
    arms: Mapping[str, Mapping[str, Any]] = results.get("arms") or {}
    trials: Sequence[Mapping[str, Any]] = results.get("trials") or ()
    baseline = baseline_arm(results)
    spec = results.get("spec") or {}
    status = results.get("status")
    base_budget = (arms[baseline].get("iterations") or 0) if baseline else 0
    budget_iterations = [fraction * base_budget for fraction in BUDGET_FRACTIONS]

    by_arm = {name: [t for t in trials if t["arm"] == name] for name in arms}
    target = _target(results, by_arm[baseline] if baseline else ())
    tuning: Mapping[str, Any] = results.get("tuning") or {}
    range_test = range_test_iterations(results)
    rows = [
        _arm_row(name, arm, by_arm[name], target["accuracy"], budget_iterations, tuning, range_test)
        for name, arm in arms.items()
    ]
    base_row = next((r for r in rows if r["arm"] == baseline), None)
    base_finals = _final_accuracies(by_arm[baseline]) if baseline else []
    for row in rows:
        base_its = base_row["iterations_to_target"]["mean"] if base_row else None
        arm_its = row["iterations_to_target"]["mean"]
        # A target met at iteration 0 (before any training) gives no ratio: x/0 or 0/x.
        if base_its and arm_its:
            row["speedup"] = base_its / arm_its
        base_s = base_row["time_to_target"]["median"] if base_row else None
        arm_s = row["time_to_target"]["median"]
        if base_s and arm_s:
            row["time_to_target"]["speedup"] = base_s / arm_s
        if base_row is not None and row is not base_row:
            finals = _final_accuracies(by_arm[row["arm"]])
            row["welch"] = _welch(row["arm"], finals, base_row["arm"], base_finals)

    counts = {state: sum(t["state"] == state for t in trials) for state in TRIAL_STATES}
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "study": {
            "id": results.get("study_id"),
            "name": spec.get("name"),
            "status": status,
            "error": results.get("error"),
            "started_at": results.get("started_at"),
            "finished_at": results.get("finished_at"),
            "wall_s": _finite(results.get("wall_s")),
        },
        "partial": status not in TERMINAL_STUDY_STATUSES,
        "trials": {
            "total": len(trials),
            "finished": sum(counts[s] for s in FINISHED_TRIAL_STATES),
            **counts,
        },
        "baseline": baseline,
        "target": {**target, "rule": CROSSING_RULE},
        "budgets": {
            "baseline_iterations": base_budget,
            "fractions": list(BUDGET_FRACTIONS),
            "iterations": budget_iterations,
        },
        "arms": rows,
        "cost": _study_cost(rows, range_test),
        "range_test": _range_test(results),
        "bounds": dict(results["bounds"]) if results.get("bounds") else None,
        "iterations_per_epoch": results.get("iterations_per_epoch"),
    }
    report["verdicts"] = verdicts(report, clr_vs_tuned(rows))
    return report
