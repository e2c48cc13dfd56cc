"""The Ray job driver of one study: `python -m service.driver STUDY_ID`.

The dispatcher submits this as a Ray Job; it runs on the cluster's head, so a study keeps
running when the API process dies. It reads its settings (the database URL among them)
from the environment of the node it runs on, never from the job's entry point or
metadata, which the Ray dashboard shows. It records every result through a
`DatabaseSink`, watches the study's cancel flag, and records how the study ended.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from service.db import DatabaseUnavailable, database_url, make_engine, retrying
from service.ray_cluster import client_environment, last_meaningful_line
from service.settings import Settings, get_settings
from service.sinks import DatabaseSink
from service.store import Store
from service.studies import validate_spec
from workers.events import (
    ArmsResolved,
    Event,
    RangeTestPoints,
    ResultSink,
    TrialEnded,
    TuningStarted,
    TuningTrialEnded,
)
from workers.runner import RunOptions, StudyFailed, run_study

log = logging.getLogger("clrstudy.driver")
CANCEL_POLL_S = 1.0
OWNER_ERROR_CHARS = 1000
# The folders of an absolute path ("/srv/app/lib/"), which `owner_message` drops.
_SERVER_PATH = re.compile(r"(?<![\w.~:/])/(?:[\w.+@-]+/)+")
# How long the study's end is retried while the database is away; past it the driver fails
# and the dispatcher's reconcile judges the study by the results stored.
FINAL_UPDATE_RETRY_S = 300.0


def tuning_storage(settings: Settings) -> str:
    """The Optuna storage of the service's tuned arms: its own database."""
    return database_url(settings.database_url).render_as_string(hide_password=False)


def tuning_study_prefix(study_id: str) -> str:
    """Optuna studies of a study's tuned arms are named f"{prefix}/{arm}"."""
    return f"clrstudy-{study_id}"


class PhaseSink:
    """Forwards events to the database sink and keeps the study's phase up to date."""

    def __init__(self, inner: ResultSink, store: Store, study_id: str) -> None:
        self.inner = inner
        self.store = store
        self.study_id = study_id
        self.phase = ""

    def emit(self, event: Event) -> None:
        phase = self.phase
        if isinstance(event, RangeTestPoints):
            phase = "range_test"
        elif isinstance(event, TuningStarted):
            phase = "tuning"
        elif isinstance(event, ArmsResolved):
            phase = "trials"
        if phase != self.phase:
            self.phase = phase
            self.store.set_phase(self.study_id, phase)
        self.inner.emit(event)


class OwnerErrorSink:
    """Forwards events with each trial's error as its owner may read it (`owner_message`);
    the full error goes to the job's log."""

    def __init__(self, inner: ResultSink, settings: Settings) -> None:
        self.inner = inner
        self.settings = settings

    def emit(self, event: Event) -> None:
        if isinstance(event, (TrialEnded, TuningTrialEnded)) and event.error:
            log.warning("trial ended with an error: %s", event.error)
            event = replace(event, error=owner_message(event.error, self.settings))
        self.inner.emit(event)


def _watch_cancel(
    store: Store, study_id: str, cancel: threading.Event, done: threading.Event
) -> None:
    while not done.wait(CANCEL_POLL_S):
        try:
            study = store.get_study(study_id)
        except DatabaseUnavailable as error:  # the next poll is the retry
            log.warning("watching study %s for a cancel: %s; retrying", study_id, error)
            continue
        if study is None or study.cancel_requested or study.status != "running":
            cancel.set()
            return


def record_end(
    store: Store, study_id: str, status: str, error: str | None, detail: str | None = None
) -> bool:
    """Record how a running study ended, retried while the database is away; whether it
    was still running (another process may have ended it)."""
    return retrying(
        lambda: store.transition(
            study_id, status, expected={"running"}, error=error, error_detail=detail, phase="done"
        ),
        FINAL_UPDATE_RETRY_S,
    )


def owner_message(text: str, settings: Settings) -> str:
    """`text` as a study's owner may read it: a traceback cut to its exception line, the data
    and checkpoint folders named by their settings, no other absolute path of the server, one
    line, at most OWNER_ERROR_CHARS."""
    head, traceback_marker, rest = text.partition("Traceback (most recent call last):")
    if traceback_marker:
        text = f"{head} {last_meaningful_line(rest.splitlines())}"
    for folder, name in (
        (settings.data_root, "DATA_ROOT"),
        (settings.storage_path, "STORAGE_PATH"),
    ):
        if "://" not in folder:
            text = text.replace(str(Path(folder).resolve()), name)
    text = _SERVER_PATH.sub("", " ".join(text.split()))
    return text if len(text) <= OWNER_ERROR_CHARS else text[: OWNER_ERROR_CHARS - 3] + "..."


def drive(study_id: str) -> int:
    """Run one study to its end; the exit code says whether it succeeded."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        return _drive(Store(engine), settings, study_id)
    finally:
        engine.dispose()


def _drive(store: Store, settings: Settings, study_id: str) -> int:
    study = store.get_study(study_id)
    if study is None or study.status != "running":
        log.error("study %s is not running (%s)", study_id, study and study.status)
        return 1
    # The API admitted the spec under its own machine's per-trial CPUs and GPUs; the nodes
    # here may differ (a smaller head), and the runner checks placement against them.
    spec = validate_spec(
        study.spec,
        settings.model_copy(
            update={"max_cpus_per_trial": math.inf, "max_gpus_per_trial": math.inf}
        ),
    )
    sink = DatabaseSink(store, study_id)
    cancel, done = threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=_watch_cancel, args=(store, study_id, cancel, done), daemon=True
    )
    watcher.start()
    options = RunOptions(
        storage_path=settings.storage_path,
        ray_address="auto",
        data_root=settings.data_root,
        experiment=study_id,
        limits=settings.limits(),
        # Tuned arms keep their Optuna studies in the service's database, named
        # f"clrstudy-{study_id}/{arm}": `optuna-dashboard DATABASE_URL` shows them.
        tuning_storage=tuning_storage(settings),
        tuning_study_prefix=tuning_study_prefix(study_id),
    )
    try:
        events = PhaseSink(OwnerErrorSink(sink, settings), store, study_id)
        outcome = run_study(spec, events, options, cancel=cancel)
        status, error, detail = outcome.status, outcome.error, None
    except StudyFailed as failure:
        status, error = "failed", owner_message(str(failure), settings)
        detail = str(failure) if error != str(failure) else None
    except Exception as bug:  # anything else is a bug, but the study must still end as failed
        log.exception("study %s: the driver failed", study_id)
        status, detail = "failed", traceback.format_exc()
        error = owner_message(f"the study's driver failed: {type(bug).__name__}: {bug}", settings)
    finally:
        done.set()
        sink.close()
    watcher.join()
    if cancel.is_set() and status == "succeeded":
        status = "cancelled"
    record_end(store, study_id, status, error, detail)
    log.info("study %s %s", study_id, status)
    return 0 if status != "failed" else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m service.driver STUDY_ID", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    client_environment()
    return drive(args[0])


if __name__ == "__main__":
    sys.exit(main())
