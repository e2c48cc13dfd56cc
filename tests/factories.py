"""Test data that several test modules share: study specs, and results documents.

Every factory returns a fresh, deep copy: a test may change what it gets.
"""

from __future__ import annotations

import copy
from typing import Any

# A small valid study: digits, two arms (one taking its bounds from the range test), 2 seeds.
SPEC: dict[str, Any] = {
    "name": "digits: triangular vs fixed",
    "dataset": "digits",
    "model": {"name": "mlp", "hidden": "32"},
    "batch_size": 64,
    "iterations": 60,
    "eval_every": 10,
    "seeds": 2,
    "range_test": {"min_lr": 0.001, "max_lr": 2.0, "iterations": 100, "ramp": "linear"},
    "arms": [
        {"name": "fixed", "optimizer": "sgd", "policy": {"name": "fixed", "lr": "auto"}},
        {
            "name": "triangular",
            "optimizer": "sgd",
            "policy": {"name": "triangular", "base_lr": "auto", "max_lr": "auto", "step_size": 20},
        },
    ],
}

# A study with a given-LR arm and a tuned fixed-LR arm (an Optuna search of 4 trials).
TUNED_SPEC: dict[str, Any] = {
    "name": "tuned",
    "dataset": "digits",
    "model": "mlp",
    "batch_size": 64,
    "iterations": 200,
    "seeds": [0],
    "arms": [
        {"name": "plain", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 0.1}},
        {
            "name": "tuned",
            "optimizer": "sgd",
            "policy": {"name": "fixed", "lr": "tuned"},
            "tuning": {"trials": 4, "space": {"lr": {"low": 0.001, "high": 1.0}}},
        },
    ],
}


def study_spec(**changes: Any) -> dict[str, Any]:
    """SPEC with some top-level fields replaced."""
    return {**copy.deepcopy(SPEC), **copy.deepcopy(changes)}


def tuned_spec(**changes: Any) -> dict[str, Any]:
    """TUNED_SPEC with some top-level fields replaced."""
    return {**copy.deepcopy(TUNED_SPEC), **copy.deepcopy(changes)}


# --- results documents (docs/results-format.md), for reports -----------------------------------


def results_trial(
    arm: str,
    seed: int,
    accuracies: list[float],
    state: str = "completed",
    *,
    every: int = 100,
    start: int | None = None,
    iterations: int = 500,
    iterations_per_epoch: int = 200,
) -> dict[str, Any]:
    """A trial of `arm` evaluated every `every` iterations from `start` (default: `every`),
    with these held-out accuracies; its loss is 1 - accuracy, None at iteration 0."""
    first = every if start is None else start
    its = [first + every * i for i in range(len(accuracies))]
    return {
        "trial_id": f"{arm}-s{seed}",
        "arm": arm,
        "seed": seed,
        "state": state,
        "error": "boom" if state == "failed" else None,
        "node_id": "node-a",
        "iterations": iterations,
        "iterations_done": its[-1] if its else 0,
        "wall_s": 10.0 + seed,
        "points": [
            {
                "iteration": it,
                "epoch": it / iterations_per_epoch,
                "lr": 0.05,
                "train_loss": None if it == 0 else 1.0 - a,
                "accuracy": a,
                "loss": 1.0 - a,
                "elapsed_s": it / 50,
            }
            for it, a in zip(its, accuracies, strict=True)
        ],
    }


def results_arm(
    policy: str,
    params: dict[str, Any],
    auto: list[str] | None = None,
    *,
    tuned: list[str] | None = None,
    optimizer: str = "sgd",
    options: dict[str, Any] | None = None,
    iterations: int = 500,
) -> dict[str, Any]:
    """An arm as results.json's "arms" holds it, resolved: `auto` params came from the range
    test, `tuned` ones (the key is left out when None, as in older documents) from a search."""
    arm: dict[str, Any] = {
        "optimizer": {"name": optimizer, "options": dict(options or {})},
        "policy": {"name": policy, "params": dict(params)},
        "auto": list(auto or ()),
        "iterations": iterations,
        "cycle_momentum": False,
    }
    if tuned is not None:
        arm["tuned"] = list(tuned)
    return arm


def results_document(
    arms: dict[str, Any],
    trials: list[dict[str, Any]],
    status: str = "succeeded",
    **fields: Any,
) -> dict[str, Any]:
    """A results document of these arms and trials; the first arm is the baseline, the target
    its final mean, and there is no range test, unless `fields` say otherwise."""
    document: dict[str, Any] = {
        "format": 1,
        "study_id": "st_1",
        "status": status,
        "error": None,
        "spec": {"name": "digits", "baseline": next(iter(arms)), "target_accuracy": "auto"},
        "started_at": "2026-11-29T12:00:00+00:00",
        "finished_at": None,
        "wall_s": 60.0,
        "iterations_per_epoch": 200,
        "range_test": None,
        "bounds": None,
        "arms": arms,
        "tuning": {},
        "trials": trials,
    }
    return {**document, **fields}


def report_row(report: dict[str, Any], arm: str) -> dict[str, Any]:
    """The report's row of `arm`."""
    row: dict[str, Any] = next(r for r in report["arms"] if r["arm"] == arm)
    return row


def against_baseline_results() -> dict[str, Any]:
    """Arms better and worse than the baseline, with figures worked out by hand.

    Target 0.9 (the spec's); evaluations every 100 iterations from 100; two seeds per arm.
    - fixed (baseline): crosses at 200 (0.5 -> 0.9), ends at 0.90 and 0.91 (mean 0.905).
    - fast: at or above 0.9 from its first evaluation, crosses at 100; ends at 0.96 and 0.97.
    - slow: 0.8 at 400 -> 0.92 at 500 crosses at 400 + 0.1 / 0.12 * 100 = 483.3; ends at 0.92.
    - weak: never reaches 0.9; ends at 0.84 and 0.85 (mean 0.845).
    """
    arms = {
        "fixed": results_arm("fixed", {"lr": 0.05}),
        "fast": results_arm("fixed", {"lr": 0.1}),
        "slow": results_arm("fixed", {"lr": 0.01}),
        "weak": results_arm("fixed", {"lr": 0.5}),
    }
    curves = {
        "fixed": ([0.5, 0.9, 0.9, 0.9, 0.90], [0.5, 0.9, 0.9, 0.9, 0.91]),
        "fast": ([0.95, 0.96, 0.96, 0.96, 0.96], [0.95, 0.96, 0.97, 0.97, 0.97]),
        "slow": ([0.5, 0.6, 0.7, 0.8, 0.92], [0.5, 0.6, 0.7, 0.8, 0.92]),
        "weak": ([0.5, 0.7, 0.8, 0.84, 0.84], [0.5, 0.7, 0.8, 0.85, 0.85]),
    }
    trials = [
        results_trial(arm, seed, accuracies)
        for arm, seeds in curves.items()
        for seed, accuracies in enumerate(seeds)
    ]
    spec = {"name": "digits", "baseline": "fixed", "target_accuracy": 0.9}
    return results_document(arms, trials, spec=spec)


def time_to_target_results() -> dict[str, Any]:
    """Five seeds per arm, evaluated every 100 iterations to 500; target 0.9 (the spec's).

    - sgd (baseline): crosses at 200 in every seed, at 10 ms per iteration: 2.0 s.
    - prodigy: crosses at 100, half sgd's iterations, but at 50 ms per iteration: 5.0 s,
      2.5x slower in time (speedup 0.4) while 2x faster in iterations.
    - wsd: seeds cross at 300, 300, 400, 400 (3.0, 3.0, 4.0, 4.0 s) and one never does:
      median 4.0 s over [3, 3, 4, 4, inf], iterations 400; mean over the four: 350.
    - dog: 2 of 5 seeds cross (at 100): the median is infinite.
    """
    curves = {
        "sgd": [[0.5, 0.9, 0.9, 0.9, 0.9]] * 5,
        "prodigy": [[0.9, 0.9, 0.9, 0.9, 0.9]] * 5,
        "wsd": [[0.5, 0.6, 0.9, 0.9, 0.9]] * 2 + [[0.5, 0.6, 0.7, 0.9, 0.9]] * 2 + [[0.5] * 5],
        "dog": [[0.9] * 5] * 2 + [[0.5] * 5] * 3,
    }
    per_iteration = {"sgd": 0.01, "prodigy": 0.05, "wsd": 0.01, "dog": 0.01}
    trials = []
    for arm, seeds in curves.items():
        for seed, accuracies in enumerate(seeds):
            trial = results_trial(arm, seed, accuracies)
            for point in trial["points"]:
                point["elapsed_s"] = point["iteration"] * per_iteration[arm]
            trial["wall_s"] = trial["points"][-1]["elapsed_s"]
            trials.append(trial)
    arms = {arm: results_arm("fixed", {"lr": 0.1}) for arm in curves}
    spec = {"name": "digits", "baseline": "sgd", "target_accuracy": 0.9}
    return results_document(arms, trials, spec=spec)


def clr_vs_tuned_results(
    clr_finals: tuple[float, float], tuned_finals: tuple[float, float], range_test: int
) -> dict[str, Any]:
    """A baseline, a CLR arm whose bounds come from a range test of `range_test` iterations,
    and a fixed-LR arm tuned by a search of 2 trials of 250 iterations (500 in all).

    Target 0.8 (the spec's); trials of 500 iterations, two seeds per arm, evaluated every 100
    from 100. The CLR arm crosses 0.8 at 300 (0.7 -> 0.8), the tuned one at 175
    (0.5 -> 0.9), the baseline at 400 (0.7 -> 0.8). Cost: CLR range_test + 1,000, tuned
    500 + 1,000 = 1,500, baseline 1,000.
    """
    arms = {
        "sgd-fixed": results_arm("fixed", {"lr": 0.01}, tuned=[]),
        "sgd-triangular": results_arm(
            "triangular",
            {"base_lr": 0.02, "max_lr": 0.08, "step_size": 100},
            ["base_lr", "max_lr"],
            tuned=[],
        ),
        "sgd-fixed-tuned": results_arm("fixed", {"lr": 0.05}, tuned=["lr"]),
    }
    trials = []
    for seed in (0, 1):
        trials += [
            results_trial("sgd-fixed", seed, [0.5, 0.6, 0.7, 0.8, 0.8]),
            results_trial("sgd-triangular", seed, [0.5, 0.7, 0.8, 0.8, clr_finals[seed]]),
            results_trial("sgd-fixed-tuned", seed, [0.5, 0.9, 0.9, 0.9, tuned_finals[seed]]),
        ]
    search = {
        "optuna_study": "clrstudy-st_1/sgd-fixed-tuned",
        "trials_planned": 2,
        "max_iterations": 500,
        "space": {"lr": {"type": "float", "low": 0.001, "high": 1.0, "log": True}},
        "trials": [
            {
                "number": number,
                "params": {"lr": lr},
                "state": "completed",
                "iterations_done": 250,
                "value": value,
                "wall_s": 5.0,
                "error": None,
                "node_id": None,
            }
            for number, lr, value in ((0, 0.2, 0.85), (1, 0.05, 0.9))
        ],
        "best": {"number": 1, "params": {"lr": 0.05}, "value": 0.9},
    }
    test = {
        "points": [],
        "stopped_at": range_test,
        "stop_reason": "completed",
        "min_lr": 0.001,
        "max_lr": 1.0,
        "ramp": "linear",
        "node_id": None,
    }
    bounds = {"base_lr": 0.02, "max_lr": 0.08, "method": "accuracy", "reason": "rise"}
    spec = {"name": "digits", "baseline": "sgd-fixed", "target_accuracy": 0.8}
    return results_document(
        arms,
        trials,
        spec=spec,
        range_test=test,
        bounds=bounds,
        tuning={"sgd-fixed-tuned": search},
    )
