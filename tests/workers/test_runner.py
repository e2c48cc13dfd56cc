"""The Ray Tune runner end to end on a real local Ray, with digits and a small MLP."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from workers.events import (
    ArmsResolved,
    BoundsFound,
    EvaluationPoints,
    Event,
    RangeTestEnded,
    RangeTestPoints,
    StudyPlanned,
    TrialEnded,
    TrialStarted,
)
from workers.runner import RunOptions, run_study
from workers.spec import StudySpec

pytestmark = pytest.mark.slow


class Collector:
    """A sink that keeps every event, as a test wants to see them."""

    def __init__(self, cancel_after_points: int | None = None) -> None:
        self.events: list[Event] = []
        self.cancel = threading.Event()
        self.cancel_after_points = cancel_after_points
        self.points = 0

    def emit(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, EvaluationPoints):
            self.points += len(event.points)
            if self.cancel_after_points and self.points >= self.cancel_after_points:
                self.cancel.set()

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def curve(self, trial_id: str) -> list:
        return [p for e in self.of(EvaluationPoints) if e.trial_id == trial_id for p in e.points]

    def ended(self) -> dict[str, TrialEnded]:
        return {e.trial_id: e for e in self.of(TrialEnded)}


def spec(arms: list[dict], **extra) -> StudySpec:
    body = {
        "name": "runner test",
        "dataset": "digits",
        "model": "mlp",
        "batch_size": 64,
        "iterations": 200,
        "eval_every": 50,
        "seeds": [0, 1],
        "arms": arms,
        "resources_per_trial": {"cpu": 1},
        **extra,
    }
    return StudySpec.model_validate(body)


def options(tmp_path: Path, ray_address: str, **extra) -> RunOptions:
    return RunOptions(storage_path=str(tmp_path / "ray"), ray_address=ray_address, **extra)


def test_study_with_range_test_resolves_auto_and_reports_everything(tmp_path, ray_address):
    study = spec(
        [
            {"name": "fixed", "optimizer": "sgd", "policy": {"name": "fixed", "lr": "auto"}},
            {
                "name": "tri",
                "optimizer": "sgd",
                "policy": {
                    "name": "triangular",
                    "base_lr": "auto",
                    "max_lr": "auto",
                    "step_size": {"epochs": 2},
                },
            },
        ],
        range_test={"min_lr": 0.001, "max_lr": 1.0, "iterations": 300, "eval_every": 5},
    )
    sink = Collector()
    outcome = run_study(study, sink, options(tmp_path, ray_address))
    assert outcome.status == "succeeded"
    assert isinstance(sink.events[0], StudyPlanned)
    planned = {t.trial_id for t in sink.events[0].trials}
    assert planned == {"fixed-s0", "fixed-s1", "tri-s0", "tri-s1"}
    per_epoch = sink.events[0].iterations_per_epoch

    range_points = [p for e in sink.of(RangeTestPoints) for p in e.points]
    (end,) = sink.of(RangeTestEnded)
    assert [p.iteration for p in range_points] == list(range(end.stopped_at))
    (bounds,) = sink.of(BoundsFound)
    assert 0.001 <= bounds.base_lr < bounds.max_lr <= 1.0

    (resolved,) = sink.of(ArmsResolved)
    tri = resolved.arms["tri"]["policy"]["params"]
    assert tri == {
        "base_lr": bounds.base_lr,
        "max_lr": bounds.max_lr,
        "step_size": 2 * per_epoch,
        "step_size_down": None,
    }
    assert resolved.arms["fixed"]["policy"]["params"] == {"lr": bounds.base_lr}
    assert sorted(resolved.arms["tri"]["auto"]) == ["base_lr", "max_lr"]

    order = [type(e) for e in sink.events]
    assert order.index(BoundsFound) < order.index(ArmsResolved) < order.index(TrialStarted)
    for trial_id in planned:
        assert [p.iteration for p in sink.curve(trial_id)] == [0, 50, 100, 150, 200]
    ended = sink.ended()
    assert {t: e.state for t, e in ended.items()} == dict.fromkeys(planned, "completed")
    assert all(e.node_id for e in sink.of(TrialStarted))
    # Seeds differ, so do their curves; the trained arms learn.
    assert sink.curve("tri-s0") != sink.curve("tri-s1")
    finals = {t: sink.curve(t)[-1].accuracy for t in planned}
    assert all(finals[t] > sink.curve(t)[0].accuracy + 0.3 for t in planned), (bounds, finals)


def test_a_killed_trial_resumes_from_its_checkpoint_with_the_same_curve(tmp_path, ray_address):
    arm = {
        "name": "tri",
        "optimizer": "sgd",
        "policy": {"name": "triangular", "base_lr": 0.01, "max_lr": 0.1, "step_size": 50},
    }
    # eval_every 20: a checkpoint every 4 evaluations (80 iterations); the process dies at
    # 120, after points 100 and 120 were sent, so the resumed run repeats them.
    study = spec([arm], iterations=200, eval_every=20, seeds=[0])
    interrupted = Collector()
    opts = options(
        tmp_path,
        ray_address,
        experiment="crash",
        fail_once_at={"tri-s0": 120},
        checkpoint_every_s=0.0,
    )
    assert run_study(study, interrupted, opts).status == "succeeded"
    assert (tmp_path / "ray" / "crash-tri-s0.failed").exists()  # it did die once
    clean = Collector()
    assert run_study(study, clean, options(tmp_path, ray_address, experiment="clean")).status == (
        "succeeded"
    )

    def values(points):
        return [(p.iteration, p.lr, p.train_loss, p.accuracy, p.loss) for p in points]

    resumed = interrupted.curve("tri-s0")
    assert [p.iteration for p in resumed] == list(range(0, 201, 20))  # no gap, no duplicate
    assert values(resumed) == values(clean.curve("tri-s0"))
    assert len(interrupted.of(TrialStarted)) >= 1
    assert interrupted.ended()["tri-s0"].state == "completed"


def test_divergence_ends_one_trial_and_cancel_stops_the_rest(tmp_path, ray_address):
    study = spec(
        [
            {"name": "absurd", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 1e6}},
            {"name": "sane", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 0.05}},
        ],
        seeds=[0],
        iterations=150,
    )
    sink = Collector()
    assert run_study(study, sink, options(tmp_path, ray_address)).status == "succeeded"
    ended = sink.ended()
    assert ended["absurd-s0"].state == "diverged"
    assert ended["sane-s0"].state == "completed"

    long_study = spec(
        [{"name": "sane", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 0.05}}],
        iterations=50_000,
        eval_every=100,
    )
    cancelling = Collector(cancel_after_points=3)
    outcome = run_study(
        long_study, cancelling, options(tmp_path, ray_address), cancel=cancelling.cancel
    )
    assert outcome.status == "cancelled"
    ended = cancelling.ended()
    assert set(ended) == {"sane-s0", "sane-s1"}
    assert {e.state for e in ended.values()} == {"cancelled"}
    assert max(p.iteration for p in cancelling.curve("sane-s0")) < 50_000


def test_killed_schedule_free_prodigy_and_dog_trials_resume_to_the_same_curves(
    tmp_path, ray_address
):
    # Each optimizer's extra state crosses the checkpoint: schedule-free's eval-mode weights,
    # Prodigy's estimate d, DoG's averaged weights. Every trial dies once at 120.
    fixed = {"name": "fixed", "lr": 1.0}
    warm_up_from_zero = {"name": "wsd", "lr": 1.0, "warmup": 10}
    arms = [
        {"name": "sf", "optimizer": "adamw_schedulefree", "policy": {**fixed, "lr": 0.0025}},
        {"name": "prodigy", "optimizer": "prodigy", "policy": warm_up_from_zero},
        {"name": "dog", "optimizer": {"name": "dog", "reps_rel": 0.01}, "policy": fixed},
    ]
    study = spec(arms, iterations=200, eval_every=20, seeds=[0])
    interrupted = Collector()
    crash = {f"{arm['name']}-s0": 120 for arm in arms}
    opts = options(
        tmp_path, ray_address, experiment="crash", fail_once_at=crash, checkpoint_every_s=0.0
    )
    assert run_study(study, interrupted, opts).status == "succeeded"
    clean = Collector()
    assert run_study(study, clean, options(tmp_path, ray_address, experiment="clean")).status == (
        "succeeded"
    )

    def values(points):
        return [(p.iteration, p.lr, p.train_loss, p.accuracy, p.loss, p.d) for p in points]

    for trial in crash:
        assert (tmp_path / "ray" / f"crash-{trial}.failed").exists()  # it did die once
        resumed = interrupted.curve(trial)
        assert [p.iteration for p in resumed] == list(range(0, 201, 20))
        assert values(resumed) == values(clean.curve(trial)), trial
    assert interrupted.curve("prodigy-s0")[-1].d > 0
