"""The driver's side of a Tune run, without Ray running: reports in, events out."""

from __future__ import annotations

import pickle
import threading
from dataclasses import asdict
from typing import Any

from workers.events import (
    RANGE_TEST_TRIAL_ID,
    EvalPoint,
    EvaluationPoints,
    Event,
    PlannedTrial,
    RangeTestPoint,
    RangeTestPoints,
    TrialEnded,
    TrialStarted,
)
from workers.tune_events import CancelStopper, EventForwarder, ForwardingCallback

PLANNED = {
    t.trial_id: t for t in (PlannedTrial("a-s0", "a", 0, 60), PlannedTrial("a-s1", "a", 1, 60))
}


class Collect:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def point(iteration: int) -> dict[str, Any]:
    return asdict(EvalPoint(iteration, iteration / 20, 0.05, 1.0, 0.5, 0.9, iteration / 100))


def report(trial_id: str, iterations: list[int], node: str = "node-a", **extra: Any) -> dict:
    done = iterations[-1] if iterations else 0
    return {
        "clr_trial": trial_id,
        "node_id": node,
        "points": [point(i) for i in iterations],
        "state": None,
        "iterations_done": done,
        "wall_s": done / 100,
        **extra,
    }


def test_a_resumed_trial_sends_each_point_once_and_starts_again_on_its_new_node() -> None:
    sink = Collect()
    forward = EventForwarder(sink, PLANNED)
    forward.result(report("a-s0", [0]))
    forward.result(report("a-s0", [20]))
    # Its process died after 20; it resumed on another node and reports 20 again.
    forward.result(report("a-s0", [20], node="node-b"))
    forward.result(report("a-s0", [40], node="node-b"))
    forward.result(report("a-s0", [60], node="node-b", state="completed"))
    forward.result(report("a-s0", [60], node="node-b", state="completed"))  # told twice
    kinds = [(type(e).__name__, getattr(e, "node_id", None)) for e in sink.events]
    assert kinds == [
        ("TrialStarted", "node-a"),
        ("EvaluationPoints", None),
        ("EvaluationPoints", None),
        ("TrialStarted", "node-b"),
        ("EvaluationPoints", None),
        ("EvaluationPoints", None),
        ("TrialEnded", "node-b"),
    ]
    sent = [p.iteration for e in sink.events if isinstance(e, EvaluationPoints) for p in e.points]
    assert sent == [0, 20, 40, 60]
    assert sink.events[0] == TrialStarted("a-s0", "a", 0, 60, "node-a")
    assert sink.events[-1] == TrialEnded("a-s0", "completed", 60, 0.6, node_id="node-b")


def test_reports_of_other_trials_are_ignored() -> None:
    sink = Collect()
    forward = EventForwarder(sink, PLANNED)
    forward.result({"accuracy": 0.5, "iterations_done": 10})  # a tuning trial's
    forward.result(report("b-s0", [0]))  # not planned
    assert sink.events == []


def test_the_range_test_sends_new_points_and_keeps_its_result() -> None:
    sink = Collect()
    forward = EventForwarder(sink, PLANNED)
    points = [asdict(RangeTestPoint(i, 0.001 * (i + 1), 2.0, 2.0)) for i in range(4)]
    base = {"clr_trial": RANGE_TEST_TRIAL_ID, "node_id": "node-a"}
    forward.result({**base, "range_points": points[:2]})
    forward.result({**base, "range_points": points[1:], "range_result": {"stopped_at": 4}})
    assert all(isinstance(e, RangeTestPoints) for e in sink.events)
    sent = [[p.iteration for p in e.points] for e in sink.events if isinstance(e, RangeTestPoints)]
    assert sent == [[0, 1], [2, 3]]
    assert (forward.range_result, forward.range_node) == ({"stopped_at": 4}, "node-a")


def test_a_failed_trial_ends_once_and_a_failed_range_test_is_kept_for_the_driver() -> None:
    sink = Collect()
    forward = EventForwarder(sink, PLANNED)
    forward.result(report("a-s0", [0, 20]))
    forward.error("a-s0", "Traceback ... boom")
    forward.error("a-s0", "again")
    forward.error(None, "a trial without our config")
    ended = [e for e in sink.events if isinstance(e, TrialEnded)]
    assert ended == [
        TrialEnded("a-s0", "failed", 20, 0.0, error="Traceback ... boom", node_id="node-a")
    ]
    forward.error(RANGE_TEST_TRIAL_ID, "range test boom")
    assert forward.range_error == "range test boom"
    assert len(sink.events) == 3


def test_trials_that_never_ended_are_cancelled() -> None:
    sink = Collect()
    forward = EventForwarder(sink, PLANNED)
    forward.result(report("a-s0", [0, 20, 40, 60], state="completed"))
    forward.result(report("a-s1", [0, 20]))
    forward.cancel_unended(PLANNED, wall_s=9.0)
    assert sink.events[-1] == TrialEnded("a-s1", "cancelled", 20, 9.0, node_id="node-a")
    assert sum(isinstance(e, TrialEnded) for e in sink.events) == 2


def test_the_stopper_follows_the_cancel_event_and_live_parts_are_not_pickled() -> None:
    cancel = threading.Event()
    stopper = CancelStopper(cancel)
    assert not stopper("t", {}) and not stopper.stop_all()
    cancel.set()
    assert stopper("t", {}) and stopper.stop_all()
    callback = ForwardingCallback(EventForwarder(Collect(), PLANNED))
    # Tune pickles both into its experiment state, which clrstudy never restores.
    assert pickle.loads(pickle.dumps(stopper)).__dict__ == {}
    assert pickle.loads(pickle.dumps(callback)).__dict__ == {}
