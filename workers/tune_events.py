"""Driver side of a Tune run: trial reports become events, a cancelled study stops trials,
and trials no node can hold end the run.

These run in the process that calls `Tuner.fit()`, not in the workers. `EventForwarder`
holds the rules (which points are new, when a trial started or ended) and is plain Python;
`ForwardingCallback`, `PlacementWatch` and `CancelStopper` are the thin Tune classes around it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import ray
from ray import tune

from workers.events import (
    RANGE_TEST_TRIAL_ID,
    EvalPoint,
    EvaluationPoints,
    PlannedTrial,
    RangeTestPoint,
    RangeTestPoints,
    ResultSink,
    TrialEnded,
    TrialStarted,
)
from workers.tuning import trial_error


class EventForwarder:
    """Turns trial reports into sink events; a point already sent is not sent again."""

    def __init__(self, sink: ResultSink, planned: Mapping[str, PlannedTrial]) -> None:
        self.sink = sink
        self.planned = planned
        self.last_iteration: dict[str, int] = {}
        self.node: dict[str, str | None] = {}
        self.ended: set[str] = set()
        self.range_result: dict[str, Any] | None = None
        self.range_node: str | None = None
        self.range_error: str | None = None

    def result(self, result: Mapping[str, Any]) -> None:
        trial_id = result.get("clr_trial")
        if trial_id == RANGE_TEST_TRIAL_ID:
            self._range_result(result)
        elif isinstance(trial_id, str) and trial_id in self.planned:
            self._arm_result(trial_id, result)

    def _range_result(self, result: Mapping[str, Any]) -> None:
        last = self.last_iteration.get(RANGE_TEST_TRIAL_ID, -1)
        points = [RangeTestPoint(**p) for p in result["range_points"] if p["iteration"] > last]
        if points:
            self.last_iteration[RANGE_TEST_TRIAL_ID] = points[-1].iteration
            self.sink.emit(RangeTestPoints(tuple(points)))
        self.range_node = result.get("node_id")
        if "range_result" in result:
            self.range_result = result["range_result"]

    def _arm_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        planned = self.planned[trial_id]
        node = result.get("node_id")
        if trial_id not in self.node or self.node[trial_id] != node:
            self.node[trial_id] = node
            self.sink.emit(
                TrialStarted(trial_id, planned.arm, planned.seed, planned.iterations, node)
            )
        last = self.last_iteration.get(trial_id, -1)
        points = [EvalPoint(**p) for p in result["points"] if p["iteration"] > last]
        if points:
            self.last_iteration[trial_id] = points[-1].iteration
            self.sink.emit(EvaluationPoints(trial_id, tuple(points)))
        state = result.get("state")
        if state and trial_id not in self.ended:
            self.ended.add(trial_id)
            self.sink.emit(
                TrialEnded(
                    trial_id,
                    state,
                    iterations_done=result["iterations_done"],
                    wall_s=result["wall_s"],
                    node_id=node,
                )
            )

    def error(self, trial_id: str | None, message: str) -> None:
        if trial_id is None or trial_id in self.ended:
            return
        self.ended.add(trial_id)
        if trial_id == RANGE_TEST_TRIAL_ID:
            self.range_error = message
            return
        self.sink.emit(
            TrialEnded(
                trial_id,
                "failed",
                iterations_done=max(0, self.last_iteration.get(trial_id, 0)),
                wall_s=0.0,
                error=message,
                node_id=self.node.get(trial_id),
            )
        )

    def cancel_unended(self, trial_ids: Iterable[str], wall_s: float) -> None:
        """End as cancelled the trials that never ended (the stopper's, or never started)."""
        for trial_id in trial_ids:
            if trial_id in self.ended:
                continue
            self.ended.add(trial_id)
            self.sink.emit(
                TrialEnded(
                    trial_id,
                    "cancelled",
                    iterations_done=max(0, self.last_iteration.get(trial_id, 0)),
                    wall_s=wall_s,
                    node_id=self.node.get(trial_id),
                )
            )


class ForwardingCallback(tune.Callback):
    """Hands Tune's trial events to the forwarder.

    Tune pickles its callbacks and stopper into the experiment's state file for
    `Tuner.restore`, which clrstudy does not use (a study's driver always starts a new
    Tuner); their live parts (the sink, the cancel event) stay out of that file.
    """

    def __init__(self, forward: EventForwarder) -> None:
        self.forward = forward

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def on_trial_result(
        self, iteration: int, trials: Any, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.forward.result(result)

    def on_trial_error(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        self.forward.error(trial.config.get("trial", {}).get("trial_id"), trial_error(trial))


def placement_problem(cpu: float, gpu: float) -> str | None:
    """Why no live node of the cluster can hold a trial asking `cpu` and `gpu`; None if one can."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if any(node.get("CPU", 0) >= cpu and node.get("GPU", 0) >= gpu for node in nodes):
        return None
    offers = sorted({(node.get("CPU", 0), node.get("GPU", 0)) for node in nodes}, reverse=True)
    largest = ", ".join(f"cpu={c:g} gpu={g:g}" for c, g in offers[:5]) or "none"
    return (
        f"no node can give cpu={cpu:g}, gpu={gpu:g} to one trial (resources_per_trial); "
        f"the nodes offer: {largest}"
    )


class PlacementWatch(tune.Callback):
    """Notes when trials have waited `grace_s` with none running while no live node can hold
    one (a node left the cluster): Ray would keep them pending forever."""

    CHECK_EVERY_S = 2.0

    def __init__(self, cpu: float, gpu: float, grace_s: float) -> None:
        self.cpu, self.gpu, self.grace_s = cpu, gpu, grace_s
        self.problem: str | None = None
        self._since: float | None = None
        self._checked = -float("inf")

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = time.monotonic()
        if self.problem is not None or now - self._checked < self.CHECK_EVERY_S:
            return
        self._checked = now
        statuses = {trial.status for trial in trials}
        stuck = "PENDING" in statuses and "RUNNING" not in statuses
        problem = placement_problem(self.cpu, self.gpu) if stuck else None
        if problem is None:
            self._since = None
            return
        self._since = now if self._since is None else self._since
        if now - self._since >= self.grace_s:
            self.problem = f"{problem}; trials waited {now - self._since:.0f} s"


class CancelStopper(tune.Stopper):
    """Stops every trial once the study is cancelled, or once `watch` found trials no node
    can hold."""

    def __init__(self, cancel: threading.Event, watch: PlacementWatch | None = None) -> None:
        self.cancel = cancel
        self.watch = watch

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        return self.cancel.is_set() or (self.watch is not None and self.watch.problem is not None)
