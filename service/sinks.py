"""The sink a study's job driver hands to `workers`: every event lands in the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial

from service.db import DatabaseUnavailable
from service.store import Store
from workers.sink import (
    RANGE_TEST_TRIAL_ID,
    BoundsFound,
    EvalPoint,
    EvaluationPoints,
    Event,
    RangeTestEnded,
    RangeTestPoint,
    RangeTestPoints,
    TrialEnded,
    TrialStarted,
)


class DatabaseSink:
    """Writes a study's events to the database, points in batches.

    Points are buffered until `flush_every` of them wait or `flush_interval_s` passed since
    the last write; every other event writes the buffer first, then itself, so the database
    never shows a trial ended without its last points. A database that is away for a while
    (up to `retry_for_s`) is retried with the buffer kept; writing a point twice is harmless.
    Thread-safe: Tune callbacks may emit from several threads.
    """

    def __init__(
        self,
        store: Store,
        study_id: str,
        *,
        flush_every: int = 50,
        flush_interval_s: float = 2.0,
        retry_for_s: float = 30.0,
        iterations_per_epoch: int | None = None,
    ) -> None:
        self.store = store
        self.study_id = study_id
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.retry_for_s = retry_for_s
        self.iterations_per_epoch = iterations_per_epoch
        self._lock = threading.Lock()
        self._range_points: list[RangeTestPoint] = []
        self._eval_points: dict[str, list[EvalPoint]] = {}
        self._buffered = 0
        self._last_flush = time.monotonic()

    def emit(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RangeTestPoints):
                self._range_points.extend(event.points)
                self._buffered += len(event.points)
            elif isinstance(event, EvaluationPoints):
                self._eval_points.setdefault(event.trial_id, []).extend(event.points)
                self._buffered += len(event.points)
            else:
                self._flush()
                self._retrying(partial(self._write, event))
                return
            overdue = time.monotonic() - self._last_flush >= self.flush_interval_s
            if self._buffered >= self.flush_every or overdue:
                self._flush()

    def flush(self) -> None:
        """Write every buffered point now."""
        with self._lock:
            self._flush()

    close = flush

    def _flush(self) -> None:
        if self._range_points:
            points = self._range_points
            self._retrying(partial(self.store.record_range_test_points, self.study_id, points))
            self._range_points = []
        for trial_id in list(self._eval_points):
            points = self._eval_points[trial_id]
            self._retrying(partial(self.store.record_eval_points, self.study_id, trial_id, points))
            del self._eval_points[trial_id]
        self._buffered = 0
        self._last_flush = time.monotonic()

    def _write(self, event: Event) -> None:
        store, study_id = self.store, self.study_id
        if isinstance(event, RangeTestEnded):
            store.record_range_test_end(study_id, **asdict(event))
        elif isinstance(event, BoundsFound):
            bounds = {
                "base_lr": event.base_lr,
                "max_lr": event.max_lr,
                "method": event.method,
                "reason": event.reason,
            }
            store.record_bounds(study_id, bounds, event.resolved_arms, self.iterations_per_epoch)
        # The range test is recorded through its own events, never as a trial.
        elif isinstance(event, TrialStarted) and event.trial_id != RANGE_TEST_TRIAL_ID:
            store.upsert_trial_started(study_id, **asdict(event))
        elif isinstance(event, TrialEnded) and event.trial_id != RANGE_TEST_TRIAL_ID:
            store.record_trial_end(study_id, **asdict(event))

    def _retrying(self, write: Callable[[], None]) -> None:
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.1
        while True:
            try:
                write()
                return
            except DatabaseUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
