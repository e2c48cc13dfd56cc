"""Starts queued studies as Ray Jobs and keeps the database true to what Ray says.

One loop in the service process, every `interval_s`:
1. reconcile: a `running` study whose job finished, failed, was stopped or vanished gets
   its true status, so nothing stays `running` forever (also after an API restart);
2. cancel: a running study flagged for cancellation whose driver has not ended it within
   `cancel_grace_s` gets its job stopped (`stop_job`);
3. start: queued studies while fewer than `max_running_studies` run (over every process
   sharing the database), no owner beyond `max_running_studies_per_owner`, owners in turn
   (`Store.claim_next_study`).
Once an hour it also removes the checkpoints of studies past CHECKPOINT_RETENTION_DAYS.
The submission id is derived from the study id, so a study never runs twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from service.db import DatabaseUnavailable
from service.models import utcnow
from service.ray_cluster import RayCluster, RayUnavailable
from service.settings import Settings
from service.store import Store, StudyRecord
from service.study_data import remove_old_checkpoints
from workers.states import RAN_TRIAL_STATES

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 3600.0  # seconds between looks for checkpoints past their retention
# The end of a failed job's log kept for admins (error_detail) and the service's log.
LOG_TAIL_CHARS = 20_000


def submission_id(study_id: str) -> str:
    return f"clrstudy-{study_id}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        cluster: RayCluster,
        settings: Settings,
        *,
        interval_s: float = 1.0,
        cancel_grace_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.settings = settings
        self.interval_s = interval_s
        self.cancel_grace_s = cancel_grace_s
        self.clock = clock  # seconds, for the cancel grace
        self._cancel_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # One Jobs client for the loop: building one checks the dashboard over HTTP.
        self._jobs: Any = None
        self._next_sweep = self.clock()  # when old checkpoints are looked for next

    # the loop ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        """Run the next tick now (a study was submitted or cancelled)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except (DatabaseUnavailable, RayUnavailable) as error:
                self._jobs = None
                log.warning("dispatcher: %s; retrying", error)
            except Exception:
                self._jobs = None
                log.exception("dispatcher tick failed; retrying")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def tick(self) -> None:
        if self._jobs is None:
            self._jobs = self.cluster.jobs()
        jobs = self._jobs
        self.reconcile(jobs)
        self.start_queued(jobs)
        now = self.clock()
        if self._next_sweep <= now:
            self._next_sweep = now + SWEEP_EVERY_S
            remove_old_checkpoints(self.store, self.settings, utcnow())

    # the steps -------------------------------------------------------------------------
    def reconcile(self, jobs: Any) -> None:
        for study in self.store.running_studies():
            status = self._job_status(jobs, study)
            if status is None:
                self._end(study, "failed", "its Ray job vanished (the Ray cluster restarted?)")
            elif status in ("SUCCEEDED", "FAILED", "STOPPED"):
                self._job_ended(jobs, study, status)
            elif (limit := self._overdue(study)) is not None:
                log.info("stopping the Ray job of study %s: past its limit", study.id)
                jobs.stop_job(submission_id(study.id))
                self._end(
                    study,
                    "failed",
                    f"the study ran past its wall-clock limit of {limit:g} s (timeout_s, at "
                    "most MAX_STUDY_SECONDS) and was stopped",
                )
            elif study.cancel_requested:
                first = self._cancel_seen.setdefault(study.id, self.clock())
                if self.clock() - first > self.cancel_grace_s:
                    log.info("stopping the Ray job of cancelled study %s", study.id)
                    jobs.stop_job(submission_id(study.id))

    def start_queued(self, jobs: Any) -> None:
        limits = (self.settings.max_running_studies, self.settings.max_running_studies_per_owner)
        while (study := self.store.claim_next_study(*limits)) is not None:
            sid = submission_id(study.id)
            try:
                jobs.submit_job(
                    entrypoint=f"python -m service.driver {study.id}",
                    submission_id=sid,
                    metadata={"study_id": study.id, "study_name": study.name[:100]},
                )
            except Exception as error:
                self.store.transition(
                    study.id, "failed", expected={"running"}, error=f"submitting to Ray: {error}"
                )
                continue
            self.store.set_submission_id(study.id, sid)
            log.info("study %s started as Ray job %s", study.id, sid)

    # helpers ---------------------------------------------------------------------------
    def _overdue(self, study: StudyRecord) -> float | None:
        """The study's wall-clock limit in seconds when it has run past it, else None."""
        limit = self.settings.max_study_seconds
        if study.spec.get("timeout_s") is not None:
            limit = min(limit, float(study.spec["timeout_s"]))
        if study.started_at is None or time.time() - study.started_at.timestamp() <= limit:
            return None
        return limit

    @staticmethod
    def _job_status(jobs: Any, study: StudyRecord) -> str | None:
        try:
            return str(jobs.get_job_status(submission_id(study.id)).value)
        except RuntimeError as error:
            if "status code 404" not in str(error) and "does not exist" not in str(error):
                raise RayUnavailable(f"Ray Jobs API: {error}") from error
            if study.submission_id is None and study.started_at is not None:
                # Claimed but not yet submitted: give the submitting tick a moment.
                age = time.time() - study.started_at.timestamp()
                return "PENDING" if age < 60 else None
            return None

    def _job_ended(self, jobs: Any, study: StudyRecord, status: str) -> None:
        # The driver records the study's end itself before it exits; re-read to be sure.
        current = self.store.get_study(study.id)
        if current is None or current.status != "running":
            return
        if status == "STOPPED" or current.cancel_requested:
            self._end(study, "cancelled", None)
            return
        trials = self.store.trials(study.id)
        if trials and all(t.state in RAN_TRIAL_STATES for t in trials):
            # Every trial's end is stored: only the driver's last write was lost (the
            # database was away when the study ended), so the study ran to its end.
            self._end(study, "succeeded", None)
            return
        try:
            logs = jobs.get_job_logs(submission_id(study.id))[-LOG_TAIL_CHARS:]
        except Exception:
            logs = ""
        log.warning(
            "study %s: its Ray job ended (%s) without a result; its log ends:\n%s",
            study.id,
            status,
            logs,
        )
        # The log holds tracebacks and the server's paths: admins read it, owners are told so.
        self._end(
            study,
            "failed",
            f"its Ray job ended ({status}) without a result; the service's log and its "
            "admins (error_detail) have the job's log",
            error_detail=logs or None,
        )

    def _end(
        self,
        study: StudyRecord,
        status: str,
        error: str | None,
        *,
        error_detail: str | None = None,
    ) -> None:
        self._cancel_seen.pop(study.id, None)
        if self.store.transition(
            study.id, status, expected={"running"}, error=error, error_detail=error_detail
        ):
            log.info("study %s reconciled to %s", study.id, status)
            self._close_searches(study)

    def _close_searches(self, study: StudyRecord) -> None:
        """A driver that died mid-search left its Optuna trials RUNNING: tell them FAIL and
        record them as interrupted (the study ended, so no later run will)."""
        arms = [a["name"] for a in study.spec.get("arms") or () if a.get("tuning")]
        if not arms:
            return
        from service.driver import tuning_storage, tuning_study_prefix
        from workers.tuning import close_interrupted

        try:
            closed = close_interrupted(
                tuning_storage(self.settings), tuning_study_prefix(study.id), arms
            )
            for record in closed:
                self.store.record_tuning_trial_end(study.id, record)
        except Exception:  # the study's status is what matters; this is its Optuna record
            log.exception("closing the tuning trials of study %s", study.id)
            return
        if closed:
            log.info("study %s: %d interrupted tuning trials told FAIL", study.id, len(closed))
