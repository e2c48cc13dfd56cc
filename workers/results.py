"""The results document (docs/results-format.md): one builder, two sources of records.

`results_document` builds it from plain records. `ResultsDocument` is a sink that folds
events into those records: `clrstudy run` hands it to the runner and it keeps
`results.json` up to date on disk, written atomically, so a study stopped half-way still
leaves a readable document. The service's `Store.results()` reads the same records from
its database rows.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workers.events import (
    ArmsResolved,
    BoundsFound,
    EvalPoint,
    EvaluationPoints,
    Event,
    RangeTestEnded,
    RangeTestPoint,
    RangeTestPoints,
    StudyPlanned,
    TrialEnded,
    TrialStarted,
    TuningEnded,
    TuningStarted,
    TuningTrialEnded,
)
from workers.states import ENDED_TRIAL_STATES, FINISHED_TRIAL_STATES, TrialState

FORMAT = 1
# Events after which the file is written at once; points wait for `write_every_s`.
WRITTEN_AT_ONCE = (
    StudyPlanned, BoundsFound, TuningStarted, TuningTrialEnded, TuningEnded, TrialEnded,
)  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat()


def planned_tuning() -> dict[str, Any]:
    """A tuned arm's entry before its search started: the Optuna study and space unknown."""
    return {
        "optuna_study": None,
        "trials_planned": None,
        "max_iterations": None,
        "space": {},
        "trials": [],
        "best": None,
    }


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number, else None (JSON has no NaN or inf)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _json_numbers(record: dict[str, Any]) -> dict[str, Any]:
    # The loss that stopped a range test (NaN or inf) travels as null.
    return {k: finite(v) if isinstance(v, float) else v for k, v in record.items()}


@dataclass
class RangeTestEntry:
    """The range test as far as it ran: its points (as `point_entry` gives them) and its end."""

    points: list[dict[str, Any]] = field(default_factory=list)
    stopped_at: int | None = None
    stop_reason: str | None = None
    node_id: str | None = None


@dataclass
class TrialEntry:
    """One trial's entry of the document; `points` as `point_entry` gives them."""

    trial_id: str
    arm: str
    seed: int
    state: TrialState = "pending"
    error: str | None = None
    node_id: str | None = None
    iterations: int = 0
    iterations_done: int = 0
    wall_s: float | None = None
    points: list[dict[str, Any]] = field(default_factory=list)


TRIAL_ENTRY_FIELDS = tuple(f.name for f in fields(TrialEntry))


def point_entry(point: EvalPoint | RangeTestPoint) -> dict[str, Any]:
    """A point as the document holds it."""
    return _json_numbers(asdict(point))


def results_document(
    spec: Mapping[str, Any],
    *,
    study_id: str | None,
    status: str,
    error: str | None,
    started_at: str | None,
    finished_at: str | None,
    wall_s: float | None,
    iterations_per_epoch: int | None,
    range_test: RangeTestEntry | None,
    bounds: Mapping[str, Any] | None,
    arms: Mapping[str, Any],
    tuning: Mapping[str, Mapping[str, Any]],
    trials: Sequence[TrialEntry],
) -> dict[str, Any]:
    """The results document from plain records: the one builder behind `clrstudy run`'s
    `ResultsDocument` and the service's `Store.results()`, so the two cannot drift."""
    return {
        "format": FORMAT,
        "study_id": study_id,
        "status": status,
        "error": error,
        "spec": spec,
        "started_at": started_at,
        "finished_at": finished_at,
        "wall_s": wall_s,
        "iterations_per_epoch": iterations_per_epoch,
        "range_test": _range_test_section(spec, range_test),
        "bounds": bounds,
        "arms": arms,
        "tuning": tuning,
        "trials": [{f: getattr(t, f) for f in TRIAL_ENTRY_FIELDS} for t in trials],
    }


def _range_test_section(
    spec: Mapping[str, Any], entry: RangeTestEntry | None
) -> dict[str, Any] | None:
    if entry is None or (not entry.points and entry.stop_reason is None):
        return None
    # The sweep's settings come from the spec as submitted.
    settings = spec.get("range_test") or {}
    return {
        "points": entry.points,
        "stopped_at": entry.stopped_at,
        "stop_reason": entry.stop_reason,
        "min_lr": settings.get("min_lr"),
        "max_lr": settings.get("max_lr"),
        "ramp": settings.get("ramp"),
        "node_id": entry.node_id,
    }


class ResultsDocument:
    """Folds events into the results document; optionally mirrors it to a file."""

    def __init__(
        self,
        spec: dict[str, Any],
        path: Path | None = None,
        *,
        study_id: str | None = None,
        write_every_s: float = 1.0,
    ) -> None:
        self.path = path
        self.write_every_s = write_every_s
        self._written = 0.0
        self._started = time.monotonic()
        self.spec = spec
        self.study_id = study_id
        self.status = "running"
        self.error: str | None = None
        self.started_at = _now()
        self.finished_at: str | None = None
        self.wall_s: float | None = None
        self.iterations_per_epoch: int | None = None
        self.range_test: RangeTestEntry | None = None
        self.bounds: dict[str, Any] | None = None
        self.arms: dict[str, Any] = {}
        self.tuning: dict[str, dict[str, Any]] = {}
        self.trials: dict[str, TrialEntry] = {}

    @property
    def doc(self) -> dict[str, Any]:
        """The document as the events so far make it."""
        return results_document(
            self.spec,
            study_id=self.study_id,
            status=self.status,
            error=self.error,
            started_at=self.started_at,
            finished_at=self.finished_at,
            wall_s=self.wall_s,
            iterations_per_epoch=self.iterations_per_epoch,
            range_test=self.range_test,
            bounds=self.bounds,
            arms=self.arms,
            tuning=self.tuning,
            trials=list(self.trials.values()),
        )

    # ResultSink
    def emit(self, event: Event) -> None:
        if isinstance(event, StudyPlanned):
            self.iterations_per_epoch = event.iterations_per_epoch
            for planned in event.trials:
                self.trials[planned.trial_id] = TrialEntry(
                    planned.trial_id, planned.arm, planned.seed, iterations=planned.iterations
                )
            for tuning in event.tuning:
                entry = self._tuning(tuning.arm)
                entry.update(trials_planned=tuning.trials, max_iterations=tuning.max_iterations)
        elif isinstance(event, RangeTestPoints):
            if self.range_test is None:
                self.range_test = RangeTestEntry()
            _extend(self.range_test.points, event.points)
        elif isinstance(event, RangeTestEnded):
            if self.range_test is not None:
                self.range_test.stopped_at = event.stopped_at
                self.range_test.stop_reason = event.stop_reason
                self.range_test.node_id = event.node_id
        elif isinstance(event, BoundsFound):
            self.bounds = asdict(event)
        elif isinstance(event, TuningStarted):
            self._tuning(event.arm).update(
                optuna_study=event.optuna_study,
                trials_planned=event.trials,
                max_iterations=event.max_iterations,
                space=event.space,
            )
        elif isinstance(event, TuningTrialEnded):
            tuning_trials = self._tuning(event.arm)["trials"]
            record = _json_numbers({k: v for k, v in asdict(event).items() if k != "arm"})
            # The same trial again (told twice, or again by a restarted search, which knows
            # no nodes) replaces it, keeping its node; the list stays sorted by number.
            for earlier in tuning_trials:
                if earlier["number"] == event.number:
                    record["node_id"] = record["node_id"] or earlier["node_id"]
                    tuning_trials.remove(earlier)
                    break
            tuning_trials.append(record)
            tuning_trials.sort(key=lambda t: t["number"])
        elif isinstance(event, TuningEnded):
            self._tuning(event.arm)["best"] = {
                "number": event.best_number,
                "params": event.best_params,
                "value": event.best_value,
            }
        elif isinstance(event, ArmsResolved):
            self.arms = event.arms
        elif isinstance(event, TrialStarted):
            trial = self.trials[event.trial_id]
            trial.state, trial.node_id = "running", event.node_id
        elif isinstance(event, EvaluationPoints):
            trial = self.trials[event.trial_id]
            _extend(trial.points, event.points)
            if trial.points:
                trial.iterations_done = trial.points[-1]["iteration"]
                trial.wall_s = trial.points[-1]["elapsed_s"]
        elif isinstance(event, TrialEnded):
            trial = self.trials[event.trial_id]
            trial.state, trial.error = event.state, event.error
            trial.iterations_done = max(trial.iterations_done, event.iterations_done)
            if event.node_id:
                trial.node_id = event.node_id
            if trial.wall_s is None or event.state in FINISHED_TRIAL_STATES:
                trial.wall_s = event.wall_s
        self._maybe_write(force=isinstance(event, WRITTEN_AT_ONCE))

    def _tuning(self, arm: str) -> dict[str, Any]:
        """The tuning section's entry of `arm`, made when it is first heard of."""
        if arm not in self.tuning:
            self.tuning[arm] = planned_tuning()
        return self.tuning[arm]

    def finish(self, status: str, error: str | None = None) -> dict[str, Any]:
        """Mark the study ended; trials that never ran are cancelled; write the file."""
        self.status, self.error = status, error
        self.finished_at = _now()
        self.wall_s = time.monotonic() - self._started
        for trial in self.trials.values():
            if trial.state not in ENDED_TRIAL_STATES:
                trial.state = "cancelled" if status != "failed" else "failed"
        self._maybe_write(force=True)
        return self.doc

    def _maybe_write(self, force: bool) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._written < self.write_every_s:
            return
        self._written = now
        write_json(self.path, self.doc)


def _extend(
    points: list[dict[str, Any]], new: Sequence[EvalPoint] | Sequence[RangeTestPoint]
) -> None:
    """Add the points past the last one held: a resumed trial reports some again."""
    seen = points[-1]["iteration"] if points else -1
    points.extend(point_entry(p) for p in new if p.iteration > seen)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, allow_nan=False))
    os.replace(tmp, path)
