"""What one trial does, without Ray: build its engine, then run a range test or an arm.

The Ray Tune trainables in `workers.trainables` wrap these loops; tests and benchmarks call
them directly. Both loops are generators that yield after every evaluation, so the caller
decides what to report and when to checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from clr.momentum import momentum_schedule
from clr.policies import make_schedule
from clr.range_test import RangeTestRecorder, RangeTestResult
from workers.datasets import Dataset
from workers.engine import Engine, Evaluation
from workers.events import EvalPoint, RangeTestPoint
from workers.models import build_model
from workers.optimizers import OPTIMIZERS, build_optimizer


@dataclass(frozen=True)
class TrialSetup:
    """Everything that defines one trial's model and optimizer (plain, picklable data)."""

    trial_id: str
    seed: int
    model: Mapping[str, Any]  # {"name", "options"}
    optimizer: Mapping[str, Any]  # {"name", "options"}
    batch_size: int
    device: str = "cpu"
    bf16: bool = False


@dataclass(frozen=True)
class ArmPlan:
    """An arm trial's resolved schedule and budget."""

    policy: Mapping[str, Any]  # {"name", "params"}: concrete values only
    iterations: int
    eval_every: int
    cycle_momentum: bool = False


@dataclass(frozen=True)
class RangeTestPlan:
    min_lr: float
    max_lr: float
    iterations: int
    ramp: str = "linear"
    eval_every: int = 10
    smoothing: float = 0.05
    stop_factor: float = 4.0


@dataclass
class ArmProgress:
    """What an arm loop yields after each evaluation."""

    point: EvalPoint | None  # None when the run diverged: its weights are not finite
    state: str | None = None  # None while running; "completed" or "diverged" at the end
    iteration: int = 0


@dataclass
class RangeTestProgress:
    points: list[RangeTestPoint] = field(default_factory=list)
    result: RangeTestResult | None = None  # set on the last yield


def build_engine(setup: TrialSetup, data: Dataset, first_lr: float) -> Engine:
    """Seeded model and optimizer on the trial's device: same seed, same initial weights."""
    torch.manual_seed(setup.seed)
    model = build_model(
        setup.model["name"],
        setup.model.get("options", {}),
        input_shape=data.input_shape,
        num_classes=data.num_classes,
    )
    optimizer = build_optimizer(
        setup.optimizer["name"],
        setup.optimizer.get("options", {}),
        model.parameters(),
        lr=first_lr,
    )
    return Engine(
        model,
        optimizer,
        data,
        batch_size=setup.batch_size,
        seed=setup.seed,
        device=setup.device,
        bf16=setup.bf16,
        stepping=OPTIMIZERS[setup.optimizer["name"]].stepping,
    )


def arm_lr_schedule(plan: ArmPlan) -> Callable[[int], float]:
    return make_schedule(plan.policy["name"], plan.policy["params"])


def run_arm(engine: Engine, plan: ArmPlan) -> Iterator[ArmProgress]:
    """Train to `plan.iterations`, yielding every `eval_every` iterations and at the end.

    A fresh engine first yields the untrained model's evaluation (iteration 0), so every
    curve starts at its origin. A non-finite training loss ends the run as "diverged";
    it is checked at evaluations only, so the loop never waits on the device per step.
    """
    lr_at = arm_lr_schedule(plan)
    # The whole schedule up front: a policy checks its arguments on every call, which is
    # nothing in a notebook but ~15% of a small model's step at ~1,000 iterations/s.
    lrs = [lr_at(it) for it in range(plan.iterations)]
    momenta: list[float | None] = [None] * plan.iterations
    if plan.cycle_momentum:
        # Smith's later advice: momentum moves inversely to the LR, by clr's one rule.
        momentum_at = momentum_schedule(plan.policy["name"], plan.policy["params"])
        momenta = [momentum_at(it) for it in range(plan.iterations)]
    if engine.iteration == 0:
        evaluation = engine.evaluate()
        yield ArmProgress(_point(engine, lrs[0], None, evaluation))
    # Losses are kept as they come (no kernel per step) and summed at each evaluation.
    losses: list[torch.Tensor] = []
    while engine.iteration < plan.iterations:
        it = engine.iteration
        lr = lrs[it]
        losses.append(engine.step(lr, momenta[it]))
        if engine.iteration % plan.eval_every and engine.iteration != plan.iterations:
            continue
        train_loss = torch.stack(losses).double().mean().item()
        if not math.isfinite(train_loss):
            yield ArmProgress(None, state="diverged", iteration=engine.iteration)
            return
        evaluation = engine.evaluate()
        done = engine.iteration >= plan.iterations
        yield ArmProgress(
            _point(engine, lr, train_loss, evaluation),
            state="completed" if done else None,
            iteration=engine.iteration,
        )
        losses.clear()


def _point(
    engine: Engine, lr: float, train_loss: float | None, evaluation: Evaluation
) -> EvalPoint:
    return EvalPoint(
        iteration=engine.iteration,
        epoch=engine.epoch,
        lr=lr,
        train_loss=train_loss,
        accuracy=evaluation.accuracy,
        loss=evaluation.loss,
        elapsed_s=engine.elapsed_s,
        d=engine.step_size(),
    )


def run_range_test(engine: Engine, plan: RangeTestPlan) -> Iterator[RangeTestProgress]:
    """The LR range test inside the shared loop; yields its points after each evaluation.

    `clr.RangeTestRecorder` keeps the curves and says when to evaluate and stop, as it does
    for `clr.range_test`. The last yield carries the `clr.RangeTestResult` that
    `clr.suggest_bounds` reads.
    """
    recorder = RangeTestRecorder(
        min_lr=plan.min_lr,
        max_lr=plan.max_lr,
        iterations=plan.iterations,
        ramp=plan.ramp,
        eval_every=plan.eval_every,
        smoothing=plan.smoothing,
        stop_factor=plan.stop_factor,
    )
    batch: list[RangeTestPoint] = []
    for it in range(plan.iterations):
        lr = recorder.lr_at(it)
        # The stop rule reads every iteration's loss, so this loop syncs per step.
        loss = engine.step(lr).item()
        smooth = recorder.record_loss(lr, loss)
        accuracy = eval_loss = None
        if recorder.evaluation_due(it):
            evaluation = engine.evaluate()
            accuracy, eval_loss = evaluation.accuracy, evaluation.loss
            recorder.record_evaluation(it, lr, accuracy, eval_loss)
        batch.append(RangeTestPoint(it, lr, loss, smooth, accuracy, eval_loss))
        if recorder.stop_reason is not None or it == plan.iterations - 1:
            yield RangeTestProgress(batch, recorder.result())
            return
        if accuracy is not None:
            yield RangeTestProgress(batch)
            batch = []
