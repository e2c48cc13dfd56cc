"""How results leave `workers`: events handed to a sink that the caller supplies.

`workers` knows nothing of databases or HTTP. The service passes a sink that writes to the
database; `clrstudy run` passes one that writes `results.json`; tests pass a collecting one.
Every event is a frozen dataclass, so a sink can keep it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from workers.states import EndedTrialState, TuningTrialState

RANGE_TEST_TRIAL_ID = "range_test"


@dataclass(frozen=True)
class RangeTestPoint:
    """One iteration of the range test; `accuracy`/`eval_loss` only on evaluation iterations."""

    iteration: int
    lr: float
    loss: float
    smoothed_loss: float
    accuracy: float | None = None
    eval_loss: float | None = None


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation of an arm trial (every `eval_every` iterations, and at the end)."""

    iteration: int
    epoch: float
    lr: float
    # Mean training loss over the iterations since the previous evaluation; None at
    # iteration 0, the untrained model's evaluation that starts every curve.
    train_loss: float | None
    accuracy: float  # held-out accuracy, 0..1
    loss: float  # held-out loss
    elapsed_s: float  # wall seconds of training so far, resumed runs included
    # The step size the optimizer estimated (Prodigy's and D-Adaptation's d, DoG's distance
    # over gradients), which the lr multiplies; None for the others.
    d: float | None = None


@dataclass(frozen=True)
class RangeTestPoints:
    points: tuple[RangeTestPoint, ...]


@dataclass(frozen=True)
class RangeTestEnded:
    stopped_at: int
    stop_reason: str
    node_id: str | None = None


@dataclass(frozen=True)
class PlannedTrial:
    trial_id: str
    arm: str
    seed: int
    iterations: int


@dataclass(frozen=True)
class PlannedTuning:
    """A tuned arm's search: `trials` tuning trials of at most `max_iterations` each."""

    arm: str
    trials: int
    max_iterations: int


@dataclass(frozen=True)
class StudyPlanned:
    """First event of a study: every trial it will run, so progress totals are known."""

    iterations_per_epoch: int
    trials: tuple[PlannedTrial, ...]
    tuning: tuple[PlannedTuning, ...] = ()


@dataclass(frozen=True)
class BoundsFound:
    """Bounds suggested from the range test (`clr.suggest_bounds`)."""

    base_lr: float
    max_lr: float
    method: str
    reason: str


@dataclass(frozen=True)
class ArmsResolved:
    """Every arm as it will train: no "auto", step sizes in iterations.

    Keyed by arm name; each value is {"optimizer": {"name", "options"}, "policy": {"name",
    "params"}, "auto": [params taken from the bounds], "tuned": [params the arm's Optuna
    search chose], "iterations": int, "cycle_momentum": bool}, the shape of results.json's
    "arms".
    """

    arms: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class TuningStarted:
    """A tuned arm's search begins (again, after a restart: `previous` trials are kept).

    `space` maps each searched policy parameter to {"type": "float" | "int", "low", "high",
    "log"}; `optuna_study` is the Optuna study's name in the tuning storage.
    """

    arm: str
    optuna_study: str
    trials: int
    max_iterations: int
    space: dict[str, dict[str, Any]]
    previous: int = 0  # tuning trials an earlier run of the study already finished


@dataclass(frozen=True)
class TuningTrialEnded:
    """One tuning trial ended; `number` is its Optuna trial number, unique per arm.

    `value` is the validation accuracy at its last evaluation (None when it never evaluated;
    0.0 when it diverged, which is what the search was told); `iterations_done` counts the
    iterations it trained, which is what it cost.
    """

    arm: str
    number: int
    params: dict[str, Any]
    state: TuningTrialState
    iterations_done: int
    value: float | None
    wall_s: float
    error: str | None = None
    node_id: str | None = None


@dataclass(frozen=True)
class TuningEnded:
    """A tuned arm's search ended: the final trials train with `best_params`.

    The best trial is the one with the highest value among those that ran to
    max_iterations (ties: the lower number).
    """

    arm: str
    best_number: int
    best_params: dict[str, Any]
    best_value: float


@dataclass(frozen=True)
class TrialStarted:
    trial_id: str
    arm: str
    seed: int
    iterations: int
    node_id: str | None = None


@dataclass(frozen=True)
class EvaluationPoints:
    trial_id: str
    points: tuple[EvalPoint, ...]


@dataclass(frozen=True)
class TrialEnded:
    trial_id: str
    state: EndedTrialState
    iterations_done: int
    wall_s: float
    error: str | None = None
    node_id: str | None = None


Event = (
    StudyPlanned
    | RangeTestPoints
    | RangeTestEnded
    | BoundsFound
    | TuningStarted
    | TuningTrialEnded
    | TuningEnded
    | ArmsResolved
    | TrialStarted
    | EvaluationPoints
    | TrialEnded
)


class ResultSink(Protocol):
    """Receives events in the order they happen; must tolerate a point sent twice.

    Order: StudyPlanned; then, with a range test, RangeTestPoints..., RangeTestEnded,
    BoundsFound; then per tuned arm TuningStarted, TuningTrialEnded..., TuningEnded; then
    ArmsResolved; then per trial TrialStarted (again after a resume on
    another node), EvaluationPoints..., TrialEnded.
    """

    def emit(self, event: Event) -> None: ...
