"""Events: frozen plain data that crosses process boundaries and JSON intact."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import pickle
import typing
from typing import Any

import pytest

from workers import events
from workers.events import (
    ArmsResolved,
    BoundsFound,
    EvalPoint,
    EvaluationPoints,
    Event,
    PlannedTrial,
    PlannedTuning,
    RangeTestEnded,
    RangeTestPoint,
    RangeTestPoints,
    ResultSink,
    StudyPlanned,
    TrialEnded,
    TrialStarted,
    TuningEnded,
    TuningStarted,
    TuningTrialEnded,
)

EVAL_POINT = EvalPoint(20, 0.95, 0.05, 0.8, 0.875, 0.4, 0.12)
RANGE_POINT = RangeTestPoint(7, 0.0123, 2.1, 2.2, 0.3, 2.05)
# One of each event, as a study sends them.
EXAMPLES: list[Any] = [
    StudyPlanned(
        21, (PlannedTrial("a-s0", "a", 0, 60),), (PlannedTuning("a", trials=4, max_iterations=40),)
    ),
    RangeTestPoints((RANGE_POINT, RangeTestPoint(8, 0.0124, 2.0, 2.19))),
    RangeTestEnded(9, "diverged", "node-a"),
    BoundsFound(0.01, 0.1, "accuracy", "it rose"),
    TuningStarted("a", "prefix/a", 4, 40, {"lr": {"type": "float", "low": 0.001, "high": 1.0}}),
    TuningTrialEnded("a", 0, {"lr": 0.1}, "stopped", 10, 0.5, 0.25, node_id="node-b"),
    TuningEnded("a", 0, {"lr": 0.1}, 0.5),
    ArmsResolved({"a": {"policy": {"name": "fixed", "params": {"lr": 0.1}}, "tuned": ["lr"]}}),
    TrialStarted("a-s0", "a", 0, 60, "node-a"),
    EvaluationPoints("a-s0", (EVAL_POINT,)),
    TrialEnded("a-s0", "completed", 60, 1.5, node_id="node-a"),
]


def test_the_event_union_names_every_event_and_the_examples_cover_it() -> None:
    classes = {
        c
        for _, c in inspect.getmembers(events, inspect.isclass)
        if dataclasses.is_dataclass(c) and c.__module__ == events.__name__
    }
    parts = {PlannedTrial, PlannedTuning, EvalPoint, RangeTestPoint}  # inside events
    assert set(typing.get_args(Event)) == classes - parts
    assert {type(e) for e in EXAMPLES} == set(typing.get_args(Event))


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_an_event_is_frozen(event: Any) -> None:
    field = dataclasses.fields(event)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, field, None)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_an_event_survives_pickling(event: Any) -> None:
    # Ray moves reports between processes by pickling them.
    assert pickle.loads(pickle.dumps(event)) == event


@pytest.mark.parametrize("point", [EVAL_POINT, RANGE_POINT], ids=["eval", "range"])
def test_a_point_round_trips_through_a_json_report(point: Any) -> None:
    # A trial reports points as dicts (tune.report); the driver rebuilds them by keyword.
    report = json.loads(json.dumps(dataclasses.asdict(point), allow_nan=False))
    assert type(point)(**report) == point


def test_points_name_their_fields_as_the_results_document_does() -> None:
    assert [f.name for f in dataclasses.fields(EvalPoint)] == [
        "iteration", "epoch", "lr", "train_loss", "accuracy", "loss", "elapsed_s", "d",
    ]  # fmt: skip
    assert [f.name for f in dataclasses.fields(RangeTestPoint)] == [
        "iteration", "lr", "loss", "smoothed_loss", "accuracy", "eval_loss",
    ]  # fmt: skip
    # Only evaluation iterations of a range test carry accuracy and held-out loss.
    plain = RangeTestPoint(3, 0.01, math.nan, 2.0)
    assert (plain.accuracy, plain.eval_loss) == (None, None)


def test_defaults_say_what_is_unknown() -> None:
    assert StudyPlanned(21, ()).tuning == ()
    assert TrialStarted("a-s0", "a", 0, 60).node_id is None
    ended = TrialEnded("a-s0", "failed", 5, 0.1)
    assert (ended.error, ended.node_id) == (None, None)
    assert TuningStarted("a", "p/a", 4, 40, {}).previous == 0


def test_a_class_with_emit_is_a_sink() -> None:
    class Collect:
        def __init__(self) -> None:
            self.events: list[Event] = []

        def emit(self, event: Event) -> None:
            self.events.append(event)

    sink: ResultSink = Collect()
    for event in EXAMPLES:
        sink.emit(event)
    assert isinstance(sink, Collect) and sink.events == EXAMPLES
