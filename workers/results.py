"""The results document (docs/results-format.md), folded from sink events.

`ResultsDocument` is itself a sink: `clrstudy run` hands it to the runner and it keeps
`results.json` up to date on disk, written atomically, so a study stopped half-way
still leaves a readable document.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    TuningEnded,
    TuningStarted,
    TuningTrialEnded,
)

FORMAT = 1
TERMINAL_TRIAL_STATES = ("completed", "diverged", "failed", "cancelled")
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


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    # The loss that stopped a range test (NaN or inf) travels as null.
    return {k: finite(v) if isinstance(v, float) else v for k, v in record.items()}


class ResultsDocument:
    """Builds the results document from events; optionally mirrors it to a file."""

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
        self.doc: dict[str, Any] = {
            "format": FORMAT,
            "study_id": study_id,
            "status": "running",
            "error": None,
            "spec": spec,
            "started_at": _now(),
            "finished_at": None,
            "wall_s": None,
            "iterations_per_epoch": None,
            "range_test": None,
            "bounds": None,
            "arms": {},
            "tuning": {},
            "trials": [],
        }
        self._trials: dict[str, dict[str, Any]] = {}

    # ResultSink
    def emit(self, event: Event) -> None:
        doc = self.doc
        if isinstance(event, StudyPlanned):
            doc["iterations_per_epoch"] = event.iterations_per_epoch
            for planned in event.trials:
                trial: dict[str, Any] = {
                    "trial_id": planned.trial_id,
                    "arm": planned.arm,
                    "seed": planned.seed,
                    "state": "pending",
                    "error": None,
                    "node_id": None,
                    "iterations": planned.iterations,
                    "iterations_done": 0,
                    "wall_s": None,
                    "points": [],
                }
                self._trials[planned.trial_id] = trial
                doc["trials"].append(trial)
            for tuning in event.tuning:
                entry = self._tuning(tuning.arm)
                entry.update(trials_planned=tuning.trials, max_iterations=tuning.max_iterations)
        elif isinstance(event, RangeTestPoints):
            if doc["range_test"] is None:
                spec_test = doc["spec"].get("range_test") or {}
                doc["range_test"] = {
                    "points": [],
                    "stopped_at": None,
                    "stop_reason": None,
                    "min_lr": spec_test.get("min_lr"),
                    "max_lr": spec_test.get("max_lr"),
                    "ramp": spec_test.get("ramp"),
                    "node_id": None,
                }
            points = doc["range_test"]["points"]
            seen = points[-1]["iteration"] if points else -1
            points.extend(_finite(asdict(p)) for p in event.points if p.iteration > seen)
        elif isinstance(event, RangeTestEnded):
            if doc["range_test"] is not None:
                doc["range_test"].update(
                    stopped_at=event.stopped_at,
                    stop_reason=event.stop_reason,
                    node_id=event.node_id,
                )
        elif isinstance(event, BoundsFound):
            doc["bounds"] = asdict(event)
        elif isinstance(event, TuningStarted):
            self._tuning(event.arm).update(
                optuna_study=event.optuna_study,
                trials_planned=event.trials,
                max_iterations=event.max_iterations,
                space=event.space,
            )
        elif isinstance(event, TuningTrialEnded):
            tuning_trials = self._tuning(event.arm)["trials"]
            record = _finite({k: v for k, v in asdict(event).items() if k != "arm"})
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
            doc["arms"] = event.arms
        elif isinstance(event, TrialStarted):
            trial = self._trials[event.trial_id]
            trial.update(state="running", node_id=event.node_id)
        elif isinstance(event, EvaluationPoints):
            trial = self._trials[event.trial_id]
            points = trial["points"]
            seen = points[-1]["iteration"] if points else -1
            points.extend(_finite(asdict(p)) for p in event.points if p.iteration > seen)
            if points:
                trial["iterations_done"] = points[-1]["iteration"]
                trial["wall_s"] = points[-1]["elapsed_s"]
        elif isinstance(event, TrialEnded):
            trial = self._trials[event.trial_id]
            trial.update(
                state=event.state,
                error=event.error,
                iterations_done=max(trial["iterations_done"], event.iterations_done),
            )
            if event.node_id:
                trial["node_id"] = event.node_id
            if trial["wall_s"] is None or event.state in ("completed", "diverged"):
                trial["wall_s"] = event.wall_s
        self._maybe_write(force=isinstance(event, WRITTEN_AT_ONCE))

    def _tuning(self, arm: str) -> dict[str, Any]:
        """The tuning section's entry of `arm`, made when it is first heard of."""
        tuning: dict[str, dict[str, Any]] = self.doc["tuning"]
        if arm not in tuning:
            tuning[arm] = planned_tuning()
        return tuning[arm]

    def finish(self, status: str, error: str | None = None) -> dict[str, Any]:
        """Mark the study ended; trials that never ran are cancelled; write the file."""
        self.doc.update(
            status=status,
            error=error,
            finished_at=_now(),
            wall_s=time.monotonic() - self._started,
        )
        for trial in self.doc["trials"]:
            if trial["state"] not in TERMINAL_TRIAL_STATES:
                trial["state"] = "cancelled" if status != "failed" else "failed"
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


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, allow_nan=False))
    os.replace(tmp, path)
