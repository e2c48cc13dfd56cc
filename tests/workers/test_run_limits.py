"""What the runner refuses before any training: trials no node can place, models too large."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from workers.events import Event
from workers.runner import RunOptions, StudyFailed, run_study
from workers.spec import Limits, StudySpec
from workers.tune_events import CancelStopper, PlacementWatch

pytestmark = pytest.mark.slow

LARGE = Limits(max_cpus_per_trial=1e6, max_model_parameters=10**12)


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def spec(**changes: object) -> StudySpec:
    body = {
        "name": "limits",
        "dataset": "digits",
        "model": {"name": "mlp", "hidden": "16"},
        "batch_size": 32,
        "iterations": 20,
        "eval_every": 10,
        "seeds": 1,
        "arms": [{"name": "fixed", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 0.1}}],
        **changes,
    }
    return StudySpec.model_validate(body, context={"limits": LARGE})


def test_a_trial_no_node_can_place_fails_the_study_at_once(
    tmp_path: Path, ray_address: str
) -> None:
    sink = Collector()
    options = RunOptions(storage_path=str(tmp_path), ray_address=ray_address, limits=LARGE)
    with pytest.raises(StudyFailed, match=r"no node can give cpu=100000, gpu=0 to one trial"):
        run_study(spec(resources_per_trial={"cpu": 100000}), sink, options)
    assert sink.events == []


def test_a_model_too_large_for_npz_data_fails_before_training(
    tmp_path: Path, ray_address: str
) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.standard_normal((40, 300)).astype(np.float32),
        "y_train": rng.integers(0, 2, 40),
        "x_test": rng.standard_normal((10, 300)).astype(np.float32),
        "y_test": rng.integers(0, 2, 10),
    }
    np.savez(tmp_path / "wide.npz", **arrays)
    limits = Limits(max_model_parameters=10_000)
    options = RunOptions(
        storage_path=str(tmp_path / "ray"),
        ray_address=ray_address,
        data_root=str(tmp_path),
        limits=limits,
    )
    # 300 inputs x 100 hidden units: 30,100 + 202 parameters; nothing at submission knew 300.
    study = spec(
        dataset={"name": "npz", "path": "wide.npz"}, model={"name": "mlp", "hidden": "100"}
    )
    sink = Collector()
    with pytest.raises(StudyFailed) as failed:
        run_study(study, sink, options)
    assert str(failed.value) == (
        "model: mlp has 30302 parameters on inputs shaped (300,) with 2 classes, above the "
        "limit of 10000 (MAX_MODEL_PARAMETERS)"
    )
    assert sink.events == []
    # The same message a submission gets where the shape is known there.
    with pytest.raises(ValueError, match="mlp has 30010 parameters on inputs shaped \\(1, 8, 8\\)"):
        StudySpec.model_validate(
            {**study.model_dump(), "dataset": "digits", "model": {"name": "mlp", "hidden": "400"}},
            context={"limits": limits},
        )


def test_trials_no_node_can_hold_end_the_run_after_the_grace(
    tmp_path: Path, ray_address: str
) -> None:
    """What a node leaving mid-study leaves: pending trials that Ray would hold forever."""
    from ray import tune

    def trainable(config: dict[str, object]) -> None:
        tune.report({"done": 1})

    watch = PlacementWatch(cpu=100000, gpu=0, grace_s=1.0)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 100000}),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            callbacks=[watch],
            stop=CancelStopper(threading.Event(), watch),
            verbose=0,
        ),
    )
    started = time.monotonic()
    tuner.fit()
    assert time.monotonic() - started < 60
    assert watch.problem is not None
    assert watch.problem.startswith("no node can give cpu=100000, gpu=0 to one trial")
