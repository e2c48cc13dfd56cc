"""The Ray Tune trainables: what runs in a Ray worker process for each trial.

Each is a function trainable in the shape of Tune's examples: it reads its config (plain
data from `workers.planning`), restores from `tune.get_checkpoint()` where it checkpoints,
and calls `tune.report(metrics, checkpoint=...)` after every evaluation. The loops
themselves are `workers.trials`'; the driver turns the reports into events
(`workers.tune_events`). Ray pickles these functions by reference: the workers import this
module by its name.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from clr.policies import check_policy_params
from workers.datasets import Dataset
from workers.events import RANGE_TEST_TRIAL_ID
from workers.trials import (
    ArmPlan,
    RangeTestPlan,
    TrialSetup,
    arm_lr_schedule,
    build_engine,
    run_arm,
    run_range_test,
)
from workers.tuning import METRIC

CHECKPOINT_EVERY = 4  # evaluations between checkpoints of an arm trial, at the most
CHECKPOINT_FILE = "trial.pt"


def _node_id() -> str | None:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _trial_threads(cpus: float) -> None:
    # torch threads = the cores the trial holds, so trials never oversubscribe the machine.
    torch.set_num_threads(max(1, int(cpus)))


def _setup(config: Mapping[str, Any]) -> TrialSetup:
    return TrialSetup(**config["setup"])


def range_test_trainable(config: dict[str, Any], data: Dataset) -> None:
    _trial_threads(config["cpus"])
    plan = RangeTestPlan(**config["plan"])
    engine = build_engine(_setup(config), data, plan.min_lr)
    node = _node_id()
    for progress in run_range_test(engine, plan):
        metrics: dict[str, Any] = {
            "clr_trial": RANGE_TEST_TRIAL_ID,
            "node_id": node,
            "range_points": [asdict(p) for p in progress.points],
        }
        if progress.result is not None:
            metrics["range_result"] = progress.result.to_dict()
        tune.report(metrics)


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """An arm trial's checkpoint: a plain dict of tensors and numbers, nothing else.

    It comes from shared storage, so `weights_only` refuses any pickled object that could
    run code when loaded.
    """
    state: dict[str, Any] = torch.load(folder / CHECKPOINT_FILE, weights_only=True)
    return state


def arm_trainable(config: dict[str, Any], data: Dataset) -> None:
    _trial_threads(config["cpus"])
    setup = _setup(config)
    plan = ArmPlan(**config["plan"])
    engine = build_engine(setup, data, arm_lr_schedule(plan)(0))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            engine.load_state_dict(load_checkpoint(Path(folder)))
    fail_at = config.get("fail_once_at")
    node = _node_id()
    last_checkpoint = time.monotonic()
    for evaluations, progress in enumerate(run_arm(engine, plan), start=1):
        metrics: dict[str, Any] = {
            "clr_trial": setup.trial_id,
            "node_id": node,
            "points": [] if progress.point is None else [asdict(progress.point)],
            "state": progress.state,
            "iterations_done": progress.iteration,
            "wall_s": engine.elapsed_s,
        }
        due = time.monotonic() - last_checkpoint >= config["checkpoint_every_s"]
        if progress.state is None and evaluations % CHECKPOINT_EVERY == 0 and due:
            last_checkpoint = time.monotonic()
            with tempfile.TemporaryDirectory() as folder:
                torch.save(engine.state_dict(), Path(folder) / CHECKPOINT_FILE)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
        _maybe_crash(fail_at, engine.iteration)


def tuning_trainable(config: dict[str, Any], data: Dataset) -> None:
    """One tuning trial: the arm with the searched values (at the top of `config`), scored
    by validation accuracy at every evaluation. No checkpoints: a failed one is not retried."""
    trial = config["trial"]
    _trial_threads(trial["cpus"])
    setup = _setup(trial)
    given = dict(trial["plan"])
    policy = given["policy"]
    # The searched values come typed from their Optuna distributions; the check converts.
    chosen = {k: config[k] for k in trial["tuned"]}
    params = check_policy_params(policy["name"], {**policy["params"], **chosen})
    plan = ArmPlan(**{**given, "policy": {"name": policy["name"], "params": params}})
    engine = build_engine(setup, data, arm_lr_schedule(plan)(0))
    node = _node_id()
    for progress in run_arm(engine, plan):
        tune.report(
            {
                # A diverged trial scores 0: the search must learn to avoid where it went.
                METRIC: 0.0 if progress.point is None else progress.point.accuracy,
                "iterations_done": progress.iteration,
                "state": progress.state,
                "wall_s": engine.elapsed_s,
                "node_id": node,
            }
        )
        _maybe_crash(trial.get("fail_once_at"), engine.iteration)


def _maybe_crash(fail_at: Mapping[str, Any] | None, iteration: int) -> None:
    """The `fail_once_at` test hook: the first trial past its iteration dies, once."""
    if fail_at is not None and iteration >= fail_at["iteration"]:
        marker = Path(fail_at["marker"])
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the abrupt death of a worker process, as a crash would be


def flatten(trainable: Callable[[dict[str, Any], Dataset], None]) -> Callable[..., None]:
    """Tune passes {"trial": {...}} (one grid value per trial); trainables read the inner dict."""

    def run(config: dict[str, Any], data: Dataset) -> None:
        trainable(config["trial"], data)

    run.__name__ = trainable.__name__
    return run
