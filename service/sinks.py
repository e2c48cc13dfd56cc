"""The sink a study's job driver hands to `workers`: every event lands in the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial

from service.db import retrying
from service.store import Store
from workers.events import (
    RANGE_TEST_TRIAL_ID,
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


class DatabaseSink:
    """Writes a study's events to the database, points in batches.

    Points wait until `flush_every` of them are buffered or `flush_interval_s` passed since
    the last write; every other event is written at once, after the points before it, so the
    database never shows a trial ended without its last points. Events are written in the
    order they came; when the database is away, writes are retried for `retry_for_s`, then
    the error is raised and the unwritten events stay buffered for the next emit or flush
    (writing a point twice is harmless). Thread-safe: Tune callbacks may emit from threads.
    """

    def __init__(
        self,
        store: Store,
        study_id: str,
        *,
        flush_every: int = 50,
        flush_interval_s: float = 2.0,
        retry_for_s: float = 30.0,
    ) -> None:
        self.store = store
        self.study_id = study_id
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.retry_for_s = retry_for_s
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self._buffered_points = 0
        self._last_flush = time.monotonic()

    def emit(self, event: Event) -> None:
        with self._lock:
            self._pending.append(event)
            if isinstance(event, RangeTestPoints | EvaluationPoints):
                self._buffered_points += len(event.points)
                overdue = time.monotonic() - self._last_flush >= self.flush_interval_s
                if self._buffered_points < self.flush_every and not overdue:
                    return
            self._flush()

    def flush(self) -> None:
        """Write every buffered event now."""
        with self._lock:
            self._flush()

    close = flush

    def _flush(self) -> None:
        while self._pending:
            points = 0
            while points < len(self._pending) and isinstance(
                self._pending[points], RangeTestPoints | EvaluationPoints
            ):
                points += 1
            if points:
                self._retrying(partial(self._write_points, self._pending[:points]))
                del self._pending[:points]
            else:
                self._retrying(partial(self._write, self._pending[0]))
                del self._pending[0]
        self._buffered_points = 0
        self._last_flush = time.monotonic()

    def _write_points(self, events: list[Event]) -> None:
        range_points: list[RangeTestPoint] = []
        eval_points: dict[str, list[EvalPoint]] = {}
        for event in events:
            if isinstance(event, RangeTestPoints):
                range_points.extend(event.points)
            elif isinstance(event, EvaluationPoints):
                eval_points.setdefault(event.trial_id, []).extend(event.points)
        self.store.record_range_test_points(self.study_id, range_points)
        for trial_id, batch in eval_points.items():
            self.store.record_eval_points(self.study_id, trial_id, batch)

    def _write(self, event: Event) -> None:
        store, study_id = self.store, self.study_id
        if isinstance(event, StudyPlanned):
            store.record_plan(study_id, event.iterations_per_epoch, event.trials, event.tuning)
        elif isinstance(event, RangeTestEnded):
            store.record_range_test_end(study_id, **asdict(event))
        elif isinstance(event, BoundsFound):
            store.record_bounds(study_id, asdict(event))
        elif isinstance(event, TuningStarted):
            store.record_tuning_started(study_id, event)
        elif isinstance(event, TuningTrialEnded):
            store.record_tuning_trial_end(study_id, event)
        elif isinstance(event, TuningEnded):
            store.record_tuning_end(study_id, event)
        elif isinstance(event, ArmsResolved):
            store.record_arms(study_id, event.arms)
        # The range test is recorded through its own events, never as a trial.
        elif isinstance(event, TrialStarted) and event.trial_id != RANGE_TEST_TRIAL_ID:
            store.upsert_trial_started(study_id, **asdict(event))
        elif isinstance(event, TrialEnded) and event.trial_id != RANGE_TEST_TRIAL_ID:
            store.record_trial_end(study_id, **asdict(event))

    def _retrying(self, write: Callable[[], None]) -> None:
        retrying(write, self.retry_for_s)
