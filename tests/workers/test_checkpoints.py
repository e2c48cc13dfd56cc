"""Arm trials' checkpoints: plain dicts of tensors and numbers, loaded without running code."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from workers.datasets import load_dataset
from workers.optimizers import OPTIMIZERS
from workers.trainables import CHECKPOINT_FILE, load_checkpoint
from workers.trials import ArmPlan, TrialSetup, build_engine, run_arm


class Planted:
    """An object whose unpickling writes a file: what a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "ran"))  # type: ignore[return-value]


def test_a_checkpoint_holding_a_pickled_object_is_refused_without_running_it(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    torch.save({"model": {}, "payload": Planted(marker)}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_optimizers_checkpoint_loads_as_weights_only(tmp_path: Path, optimizer: str) -> None:
    data = load_dataset("digits", {})
    model = {"name": "mlp", "options": {"hidden": "8"}}
    engine = build_engine(TrialSetup("t", 0, model, {"name": optimizer}, 32), data, 0.01)
    for _ in run_arm(engine, ArmPlan({"name": "fixed", "params": {"lr": 0.01}}, 20, 10)):
        pass
    torch.save(engine.state_dict(), tmp_path / CHECKPOINT_FILE)
    state = load_checkpoint(tmp_path)
    assert state["iteration"] == 20
    build_engine(TrialSetup("t", 0, model, {"name": optimizer}, 32), data, 0.01).load_state_dict(
        state
    )
