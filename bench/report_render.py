"""Benchmark: render the report of a synthetic study (10 arms x 5 seeds x 1,000 evaluations).

Targets (issue 5): HTML under 2 s, JSON (build_report + json.dumps) under 0.5 s on the
2-core development machine. Prints each time with its target and ratio (time / target);
"first" is the first call in the process (matplotlib loads its fonts then), "best" the best
of the following `--repeat` calls, as a long-running service sees it, and "cpu" the CPU
seconds of that call (close to the wall time on an idle machine, whatever else runs).

    .venv/bin/python bench/report_render.py [--arms 10 --seeds 5 --points 1000 --repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from service.reports import build_report, render_csv, render_html

EVAL_EVERY = 10  # iterations between evaluations
# (arm name, optimizer, policy, params); "bounds" params are marked auto, as from a range test.
ARM_RECIPES: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("fixed", "sgd", "fixed", {"lr": 0.05}),
    ("triangular", "sgd", "triangular", {"base_lr": 0.01, "max_lr": 0.1, "step_size": 400}),
    ("triangular2", "sgd", "triangular2", {"base_lr": 0.01, "max_lr": 0.1, "step_size": 400}),
    (
        "exp_range",
        "sgd",
        "exp_range",
        {"base_lr": 0.01, "max_lr": 0.1, "step_size": 400, "gamma": 0.9999},
    ),
    ("step", "sgd", "step", {"lr": 0.05, "step_size": 3000, "gamma": 0.1}),
    ("exp", "sgd", "exp", {"lr": 0.05, "gamma": 0.9998}),
    ("decay", "sgd", "decay", {"base_lr": 0.001, "max_lr": 0.1, "step_size": 5000}),
    ("cosine", "sgd", "cosine", {"base_lr": 0.001, "max_lr": 0.1, "total_iterations": 10000}),
    ("one_cycle", "sgd", "one_cycle", {"max_lr": 0.1, "total_iterations": 10000}),
    ("adam_clr", "adam", "triangular", {"base_lr": 0.0003, "max_lr": 0.003, "step_size": 400}),
)


def synthetic_results(arms: int = 10, seeds: int = 5, points: int = 1000) -> dict[str, Any]:
    """A finished study's results document with saturating, noisy accuracy curves."""
    rng = np.random.default_rng(0)
    iterations = points * EVAL_EVERY
    its = np.arange(1, points + 1) * EVAL_EVERY
    arm_docs, trials = {}, []
    for a in range(arms):
        name, optimizer, policy, params = ARM_RECIPES[a % len(ARM_RECIPES)]
        name = name if a < len(ARM_RECIPES) else f"{name}_{a}"
        params = {
            **params,
            **({"total_iterations": iterations} if "total_iterations" in params else {}),
        }
        arm_docs[name] = {
            "optimizer": {"name": optimizer, "options": {"momentum": 0.9}},
            "policy": {"name": policy, "params": params},
            "auto": [k for k in ("base_lr", "max_lr") if k in params],
            "iterations": iterations,
            "cycle_momentum": False,
        }
        tau = 1500 / (1 + 0.25 * a)  # iterations; later arms learn faster
        for s in range(seeds):
            acc = 0.97 * (1 - np.exp(-its / tau)) + rng.normal(0, 0.004, its.size)
            loss = np.maximum(0.05, 2.3 * np.exp(-its / tau))
            trials.append(
                {
                    "trial_id": f"{name}-s{s}",
                    "arm": name,
                    "seed": s,
                    "state": "completed",
                    "error": None,
                    "node_id": None,
                    "iterations": iterations,
                    "iterations_done": iterations,
                    "wall_s": 60.0 + s,
                    "points": [
                        {
                            "iteration": int(it),
                            "epoch": it / 21,
                            "lr": 0.05,
                            "train_loss": float(lo),
                            "accuracy": float(ac),
                            "loss": float(lo),
                            "elapsed_s": it * 0.006,
                        }
                        for it, ac, lo in zip(its, acc, loss, strict=True)
                    ],
                }
            )
    lrs = np.linspace(0.001, 2.0, 300).tolist()
    return {
        "format": 1,
        "study_id": "bench",
        "status": "succeeded",
        "error": None,
        "spec": {"name": "synthetic", "baseline": "fixed", "target_accuracy": "auto"},
        "started_at": None,
        "finished_at": None,
        "wall_s": 600.0,
        "iterations_per_epoch": 21,
        "range_test": {
            "points": [
                {
                    "iteration": i,
                    "lr": lr,
                    "loss": 2.3 * math.exp(-3 * lr) + lr**3,
                    "smoothed_loss": 2.3 * math.exp(-3 * lr) + lr**3,
                    "accuracy": float(0.95 * math.tanh(10 * lr) - 0.1 * lr**2)
                    if i % 10 == 0
                    else None,
                    "eval_loss": None,
                }
                for i, lr in enumerate(lrs)
            ],
            "stopped_at": 300,
            "stop_reason": "completed",
            "min_lr": 0.001,
            "max_lr": 2.0,
            "ramp": "linear",
            "node_id": None,
        },
        "bounds": {
            "base_lr": 0.1,
            "max_lr": 0.4,
            "method": "accuracy",
            "reason": "accuracy rises from 0.1 and slows after 0.4",
        },
        "arms": arm_docs,
        "trials": trials,
    }


def _time(call: Callable[[], Any], repeat: int) -> tuple[float, float, float, Any]:
    """Wall seconds of the first call, best wall and best CPU seconds of the next `repeat`."""
    start = time.perf_counter()
    out = call()
    first = time.perf_counter() - start
    best, best_cpu = math.inf, math.inf
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return first, best, best_cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--points", type=int, default=1000, help="evaluations per trial")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = synthetic_results(args.arms, args.seeds, args.points)
    print(f"study: {args.arms} arms x {args.seeds} seeds x {args.points} evaluation points")
    rows = (
        ("build_report+json", 0.5, lambda: json.dumps(build_report(results), allow_nan=False)),
        ("render_html", 2.0, lambda: render_html(results)),
        ("render_csv", None, lambda: render_csv(results)),
    )
    for name, target, call in rows:
        first, best, cpu, out = _time(call, args.repeat)
        verdict = f"target {target:.1f} s  ratio {best / target:.2f}" if target else "no target"
        print(
            f"{name:18s} first {first:6.3f} s  best {best:6.3f} s (cpu {cpu:6.3f} s)  "
            f"{verdict}  size {len(out.encode()) / 1024:,.0f} KiB"
        )


if __name__ == "__main__":
    main()
