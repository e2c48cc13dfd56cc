"""A tuned arm's search through clrstudy against the same search in plain Ray Tune.

clrstudy: `run_study` on a spec whose only arm is tuned (its Optuna search, then one final
trial with the best LR). Reference, in the same run on the same local Ray: a plain
`tune.Tuner` with Ray's `OptunaSearch` (TPE, same seed and space) and `ASHAScheduler`
(same rungs) over a hand-written PyTorch loop on the same data and model, then one plain
Tune trial of its best LR. Both search the training set less a 20% validation split and
evaluate as often. Their ASHA decisions can differ (different code draws different
initial weights), so the figure to read is training throughput: iterations trained per
wall second, each side counting what its trials reported.

    .venv/bin/python bench/tuning_search.py [--trials 12] [--iterations 672]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from torch import nn
from torch.nn import functional

from workers.datasets import Dataset, load_dataset
from workers.results import ResultsDocument
from workers.runner import RunOptions, ensure_ray, run_study
from workers.spec import StudySpec

BATCH = 64
EVAL_EVERY = 21
# Tune's JSON logger, which clrstudy's runs keep too (importing workers.runner turns off
# Tune's default loggers: their CSV and TensorBoard forms cannot hold our reports).
LOGGER: list[tune.Callback] = [JsonLoggerCallback()]


def spec(trials: int, iterations: int) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": "tuning bench",
            "dataset": "digits",
            "model": {"name": "mlp", "hidden": "128,64"},
            "batch_size": BATCH,
            "iterations": iterations,
            "eval_every": EVAL_EVERY,
            "seeds": [0],
            "arms": [
                {
                    "name": "tuned",
                    "optimizer": {"name": "sgd", "momentum": 0.9},
                    "policy": "fixed",
                    "tuning": {"trials": trials, "space": {"lr": {"low": 0.001, "high": 1.0}}},
                }
            ],
            "resources_per_trial": {"cpu": 1},
        }
    )


def ours(study: StudySpec, storage: str) -> tuple[float, int]:
    document = ResultsDocument(study.model_dump(mode="json"))
    options = RunOptions(storage_path=storage, experiment=f"ours-{time.time_ns()}")
    started = time.perf_counter()
    outcome = run_study(study, document, options)
    elapsed = time.perf_counter() - started
    assert outcome.status == "succeeded", outcome
    tuning = document.doc["tuning"]["tuned"]["trials"]
    trained = sum(t["iterations_done"] for t in tuning)
    trained += sum(t["iterations_done"] for t in document.doc["trials"])
    return elapsed, trained


def plain_trainable(config: dict[str, Any], data: Dataset) -> None:
    """A hand-written loop: MLP 64-128-64-10, SGD momentum 0.9, fixed LR, digits."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    assert data.x_train is not None and data.y_train is not None
    assert data.x_test is not None and data.y_test is not None
    x, y = data.x_train.flatten(1), data.y_train
    x_val, y_val = data.x_test.flatten(1), data.y_test
    model = nn.Sequential(
        nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    per_epoch = len(y) // BATCH
    order = torch.randperm(len(y))
    for it in range(1, config["iterations"] + 1):
        step = (it - 1) % per_epoch
        if step == 0:
            order = torch.randperm(len(y))
        index = order[step * BATCH : (step + 1) * BATCH]
        optimizer.zero_grad(set_to_none=True)
        functional.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()
        if it % EVAL_EVERY == 0 or it == config["iterations"]:
            with torch.no_grad():
                accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
            tune.report({"accuracy": accuracy, "iterations_done": it})


def reference(trials: int, iterations: int, storage: str) -> tuple[float, int]:
    data = load_dataset("digits", {}, seed=0)
    split = data.validation_split(0.2, seed=0)
    trainable = tune.with_resources(tune.with_parameters(plain_trainable, data=split), {"cpu": 1})
    started = time.perf_counter()
    search = tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(0.001, 1.0), "iterations": iterations},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(
                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=max(3, trials // 3))
            ),
            scheduler=ASHAScheduler(
                time_attr="iterations_done",
                max_t=iterations,
                grace_period=max(1, iterations // 9),
                reduction_factor=3,
            ),
            metric="accuracy",
            mode="max",
            num_samples=trials,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=storage, name=f"ref-{time.time_ns()}", callbacks=LOGGER, verbose=0
        ),
    ).fit()
    best = search.get_best_result(metric="accuracy", mode="max", scope="last")
    assert best.config is not None
    final = tune.Tuner(
        tune.with_resources(tune.with_parameters(plain_trainable, data=data), {"cpu": 1}),
        param_space={"lr": best.config["lr"], "iterations": iterations},
        run_config=tune.RunConfig(
            storage_path=storage, name=f"final-{time.time_ns()}", callbacks=LOGGER, verbose=0
        ),
    ).fit()
    elapsed = time.perf_counter() - started
    results = [search[i] for i in range(len(search))] + [final[0]]
    trained = sum(int((r.metrics or {}).get("iterations_done", 0)) for r in results)
    return elapsed, trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=672)
    args = parser.parse_args()
    ensure_ray(None, num_cpus=2)
    study = spec(args.trials, args.iterations)
    with tempfile.TemporaryDirectory() as storage:
        ours(study, storage)  # warm-up: workers, imports, data in the object store
        ref_s, ref_its = reference(args.trials, args.iterations, storage)
        our_s, our_its = ours(study, storage)
    ray.shutdown()
    print(
        f"digits, MLP 128-64, {args.trials} tuning trials of <= {args.iterations} iterations "
        "(ASHA), then 1 final trial; 1 CPU per trial, 2 CPUs"
    )
    print(f"plain Ray Tune: {ref_s:6.1f} s, {ref_its:6d} iterations, {ref_its / ref_s:7.0f} it/s")
    print(f"clrstudy:       {our_s:6.1f} s, {our_its:6d} iterations, {our_its / our_s:7.0f} it/s")
    print(f"throughput ratio (clrstudy / plain): {(our_its / our_s) / (ref_its / ref_s):.2f}")


if __name__ == "__main__":
    main()
