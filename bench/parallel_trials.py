"""Two one-CPU trials side by side on two CPUs against the same trials one after the other.

Both runs go through `workers.runner.run_study` on one local Ray, with the same spec (one
arm, two seeds, no range test); only `max_concurrent_trials` differs. Target: >= 1.6x.

    .venv/bin/python bench/parallel_trials.py [--iterations 3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import ray

from workers.results import ResultsDocument
from workers.runner import RunOptions, ensure_ray, run_study
from workers.spec import StudySpec


def spec(iterations: int) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": "parallel bench",
            "dataset": "synthetic",
            "model": "small_cnn",
            "batch_size": 128,
            "iterations": iterations,
            "eval_every": iterations // 10,
            "seeds": 2,
            "arms": [
                {
                    "name": "triangular",
                    "optimizer": {"name": "sgd", "momentum": 0.9},
                    "policy": {
                        "name": "triangular",
                        "base_lr": 0.01,
                        "max_lr": 0.1,
                        "step_size": 250,
                    },
                }
            ],
            "resources_per_trial": {"cpu": 1},
        }
    )


def timed(study: StudySpec, storage: str, concurrent: int | None) -> float:
    options = RunOptions(
        storage_path=storage, experiment=f"c{concurrent}", max_concurrent_trials=concurrent
    )
    document = ResultsDocument(study.model_dump(mode="json"))
    started = time.perf_counter()
    outcome = run_study(study, document, options)
    elapsed = time.perf_counter() - started
    states = {t["state"] for t in document.doc["trials"]}
    assert outcome.status == "succeeded" and states == {"completed"}, (outcome, states)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    ensure_ray(None, num_cpus=2)
    study = spec(args.iterations)
    with tempfile.TemporaryDirectory() as storage:
        timed(study, storage, None)  # warm-up: workers, imports, data in the object store
        sequential = timed(study, storage, 1)
        parallel = timed(study, storage, None)
    ray.shutdown()
    print(f"2 trials x {args.iterations} iterations, synthetic/small_cnn, 1 CPU each, 2 CPUs")
    print(f"one after the other: {sequential:6.1f} s")
    print(f"side by side:        {parallel:6.1f} s")
    print(f"speed-up:            {sequential / parallel:6.2f}x  (target >= 1.6x)")


if __name__ == "__main__":
    main()
