"""A database outage while a study runs or ends: the driver's cancel watch and its last
write retry, and the dispatcher trusts the results already stored (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from service import driver
from service.db import make_engine, upgrade
from service.dispatcher import Dispatcher, submission_id
from service.settings import Settings
from service.sinks import DatabaseSink
from service.store import Store
from tests.api.conftest import Outage
from tests.factories import study_spec
from workers.events import PlannedTrial, StudyPlanned, TrialEnded, TrialStarted


@pytest.fixture
def outage(db_url: str, tmp_path: Path) -> Iterator[Outage]:
    outage = Outage(db_url, tmp_path)
    outage.folder.mkdir()
    yield outage
    if outage.proxy is not None:
        outage.proxy.cut()


@pytest.fixture
def store(outage: Outage) -> Iterator[Store]:
    upgrade(outage.url)
    engine = make_engine(outage.url)
    yield Store(engine)
    engine.dispose()


def down(outage: Outage, store: Store) -> None:
    outage.down(SimpleNamespace(state=SimpleNamespace(store=store)))


def running_study(store: Store) -> str:
    key, _ = store.create_api_key("alice")
    study, _ = store.create_study(key.owner.id, study_spec(), "digits")
    assert store.transition(study.id, "running", expected={"queued"})
    return study.id


def test_the_cancel_watch_outlives_a_database_outage(
    store: Store, outage: Outage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver, "CANCEL_POLL_S", 0.02)
    study_id = running_study(store)
    cancel, done = threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=driver._watch_cancel, args=(store, study_id, cancel, done), daemon=True
    )
    watcher.start()
    down(outage, store)
    time.sleep(0.5)  # polls that fail
    outage.up()
    store.request_cancel(study_id)
    try:
        assert cancel.wait(10), "the watch died with the database"
    finally:
        done.set()


def test_the_end_of_a_study_is_retried_until_the_database_is_back(
    store: Store, outage: Outage
) -> None:
    study_id = running_study(store)
    down(outage, store)
    threading.Timer(1.0, outage.up).start()
    assert driver.record_end(store, study_id, "succeeded", None)
    ended = store.get_study(study_id)
    assert ended is not None and (ended.status, ended.phase) == ("succeeded", "done")


class EndedJobs:
    """Ray's Jobs client after the study's job ended (FAILED: its last write raised)."""

    def get_job_status(self, job_id: str) -> SimpleNamespace:
        return SimpleNamespace(value="FAILED")

    def get_job_logs(self, job_id: str) -> str:
        return "DatabaseUnavailable: the database is away"


@pytest.mark.parametrize(("last_state", "status"), [("completed", "succeeded"), (None, "failed")])
def test_reconcile_trusts_the_trial_ends_already_stored(
    store: Store, outage: Outage, tmp_path: Path, last_state: str | None, status: str
) -> None:
    study_id = running_study(store)
    store.set_submission_id(study_id, submission_id(study_id))
    trials = [PlannedTrial(f"fixed-s{seed}", "fixed", seed, 60) for seed in (0, 1)]
    events = [StudyPlanned(21, tuple(trials))]
    ended = (
        [("fixed-s0", "completed"), ("fixed-s1", last_state)]
        if last_state
        else [("fixed-s0", "completed")]
    )
    for trial_id, state in ended:
        seed = int(trial_id[-1])
        events += [TrialStarted(trial_id, "fixed", seed, 60), TrialEnded(trial_id, state, 60, 1.0)]
    sink = DatabaseSink(store, study_id)
    for event in events:
        sink.emit(event)
    sink.close()
    settings = Settings(_env_file=None, database_url=outage.url, storage_path=str(tmp_path))
    Dispatcher(store, None, settings).reconcile(EndedJobs())  # type: ignore[arg-type]
    study = store.get_study(study_id)
    assert study is not None and study.status == status
