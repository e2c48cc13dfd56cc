"""The dispatcher's branches against a fake Ray Jobs client and a real database: starting
queued studies up to the cap, a failed submission, reconciling with what Ray says, the cancel
grace, and the end of a study whose driver died (its Optuna searches are closed)."""

from __future__ import annotations

import enum
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import update

from service.db import make_engine
from service.dispatcher import LOG_TAIL_CHARS, Dispatcher, submission_id
from service.driver import tuning_storage, tuning_study_prefix
from service.models import Study, utcnow
from service.ray_cluster import RayCluster, RayUnavailable
from service.settings import Settings
from service.store import Store, StudyRecord
from tests.factories import study_spec, tuned_spec
from workers.tuning import ITERATIONS_ATTR, STATE_ATTR, open_storage

SPEC = tuned_spec()
GRACE_S = 30.0


class JobStatus(enum.Enum):
    """Ray's JobStatus values (the dispatcher reads `.value`)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class FakeJobs:
    """Ray's JobSubmissionClient as the dispatcher uses it: jobs by submission id."""

    def __init__(self) -> None:
        self.status: dict[str, JobStatus] = {}
        self.submitted: list[dict[str, Any]] = []
        self.stopped: list[str] = []
        self.logs: dict[str, str] = {}
        self.submit_error: Exception | None = None
        self.status_error: Exception | None = None

    def submit_job(self, *, entrypoint: str, submission_id: str, metadata: dict) -> str:
        if self.submit_error is not None:
            raise self.submit_error
        self.submitted.append(
            {"entrypoint": entrypoint, "submission_id": submission_id, "metadata": metadata}
        )
        self.status[submission_id] = JobStatus.PENDING
        return submission_id

    def get_job_status(self, job_id: str) -> JobStatus:
        if self.status_error is not None:
            raise self.status_error
        if job_id not in self.status:
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return self.status[job_id]

    def stop_job(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        return True

    def get_job_logs(self, job_id: str) -> str:
        return self.logs[job_id]  # a KeyError stands for logs Ray could not give


class FakeCluster:
    """The RayCluster part the dispatcher uses: a Jobs client, counted."""

    def __init__(self, jobs: FakeJobs) -> None:
        self.fake_jobs = jobs
        self.clients = 0

    def jobs(self) -> FakeJobs:
        self.clients += 1
        return self.fake_jobs


class Clock:
    """Seconds that a test moves on by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jobs() -> FakeJobs:
    return FakeJobs()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=db_url,
        storage_path=str(tmp_path / "ray"),
        max_running_studies=2,
    )


@pytest.fixture
def dispatcher(store: Store, jobs: FakeJobs, settings: Settings, clock: Clock) -> Dispatcher:
    return Dispatcher(
        store,
        FakeCluster(jobs),
        settings,
        cancel_grace_s=GRACE_S,
        clock=clock,
    )


def queue(store: Store, count: int, owner: str = "alice") -> list[str]:
    """`count` queued studies of `owner`, oldest first."""
    key, _ = store.create_api_key(owner)
    return [
        store.create_study(key.owner.id, study_spec(), f"study {i}")[0].id for i in range(count)
    ]


def status(store: Store, study_id: str) -> str:
    study = store.get_study(study_id)
    assert study is not None
    return study.status


def study(store: Store, study_id: str) -> StudyRecord:
    record = store.get_study(study_id)
    assert record is not None
    return record


# --- starting queued studies ------------------------------------------------------------------


def test_queued_studies_start_oldest_first_up_to_the_cap(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs
) -> None:
    first, second, third = queue(store, 3)
    dispatcher.tick()
    assert [status(store, s) for s in (first, second, third)] == ["running", "running", "queued"]
    assert [job["submission_id"] for job in jobs.submitted] == [
        submission_id(first),
        submission_id(second),
    ]
    assert jobs.submitted[0]["entrypoint"] == f"python -m service.driver {first}"
    assert jobs.submitted[0]["metadata"] == {"study_id": first, "study_name": "study 0"}
    assert study(store, first).submission_id == f"clrstudy-{first}"
    dispatcher.tick()  # at the cap: nothing more starts
    assert status(store, third) == "queued" and len(jobs.submitted) == 2
    # The first study's driver records its end and its job succeeds: a place is free.
    assert store.transition(first, "succeeded", expected={"running"})
    jobs.status[submission_id(first)] = JobStatus.SUCCEEDED
    dispatcher.tick()
    assert status(store, third) == "running"
    assert status(store, first) == "succeeded"  # reconcile left the driver's end as it was
    assert dispatcher.cluster.clients == 1  # one client, kept


def test_the_cap_counts_every_owners_running_studies(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs
) -> None:
    (alices,) = queue(store, 1, "alice")
    dispatcher.tick()
    bobs = queue(store, 2, "bob")
    dispatcher.tick()
    assert [status(store, s) for s in (alices, *bobs)] == ["running", "running", "queued"]


def test_owners_take_turns_and_none_runs_more_than_its_limit(
    store: Store, jobs: FakeJobs, settings: Settings
) -> None:
    alices = queue(store, 3, "alice")  # however created: here straight into the store
    (bobs,) = queue(store, 1, "bob")
    turns = Dispatcher(store, FakeCluster(jobs), settings)
    turns.tick()  # two places: one each, not alice's two oldest
    assert [status(store, s) for s in (*alices, bobs)] == ["running", "queued", "queued", "running"]
    one_each = settings.model_copy(
        update={"max_running_studies": 10, "max_running_studies_per_owner": 1}
    )
    Dispatcher(store, FakeCluster(jobs), one_each).tick()
    assert [status(store, s) for s in alices] == ["running", "queued", "queued"]
    assert len(jobs.submitted) == 2


def test_the_cap_holds_over_several_service_processes(
    store: Store, db_url: str, settings: Settings
) -> None:
    """Four dispatchers, each with its own engine (as four API processes have), tick at once."""
    stores = [store, *(Store(make_engine(db_url)) for _ in range(3))]

    def start_queued(own: Store, start: threading.Barrier) -> None:
        dispatcher = Dispatcher(own, FakeCluster(FakeJobs()), settings)
        start.wait()
        dispatcher.start_queued(dispatcher.cluster.jobs())

    try:
        for round_ in range(3):
            for owner in range(4):
                queue(store, 3, f"owner {round_}-{owner}")
            start = threading.Barrier(len(stores))
            threads = [threading.Thread(target=start_queued, args=(s, start)) for s in stores]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(store.running_studies()) == settings.max_running_studies == 2
            for study in store.running_studies():  # free the places for the next round
                store.transition(study.id, "succeeded", expected={"running"})
    finally:
        for other in stores[1:]:
            other.engine.dispose()


def test_checkpoints_of_studies_past_their_retention_are_removed_results_kept(
    store: Store, jobs: FakeJobs, settings: Settings, clock: Clock
) -> None:
    old, recent, running = queue(store, 3)
    for study_id in (old, recent, running):
        assert store.transition(study_id, "running", expected={"queued"})
        jobs.status[submission_id(study_id)] = JobStatus.RUNNING
    for study_id in (old, recent):
        assert store.transition(study_id, "succeeded", expected={"running"})
    ended = utcnow() - timedelta(days=15)  # CHECKPOINT_RETENTION_DAYS is 14
    with store.engine.begin() as connection:
        connection.execute(update(Study).where(Study.id == old).values(finished_at=ended))
    root = Path(settings.storage_path)
    files = {}
    for study_id in (old, recent, running):
        trial = root / f"{study_id}-trials" / "train_0"
        for name in ("checkpoint_000000/state.pt", "checkpoint_000001/state.pt", "result.json"):
            (trial / name).parent.mkdir(parents=True, exist_ok=True)
            (trial / name).write_text("x")
        files[study_id] = trial
    results_before = store.results(old)

    dispatcher = Dispatcher(store, FakeCluster(jobs), settings, clock=clock)
    dispatcher.tick()
    assert not list(files[old].glob("checkpoint_*"))
    assert (files[old] / "result.json").exists() and store.results(old) == results_before
    for study_id in (recent, running):
        assert len(list(files[study_id].glob("checkpoint_*"))) == 2
    # Looked for once an hour; a study done is not looked at again.
    assert store.studies_with_checkpoints(finished_before=utcnow()) == [recent]
    (files[old] / "checkpoint_000002").mkdir()
    clock.now += 3599
    dispatcher.tick()
    assert (files[old] / "checkpoint_000002").exists()


def test_a_failed_submission_fails_its_study_and_the_next_still_starts(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs
) -> None:
    first, second = queue(store, 2)
    jobs.submit_error = RuntimeError("connection refused")
    dispatcher.tick()
    for study_id in (first, second):
        failed = study(store, study_id)
        assert failed.status == "failed" and failed.submission_id is None
        assert failed.error == "submitting to Ray: connection refused"
    jobs.submit_error = None
    (third,) = queue(store, 1, "bob")
    dispatcher.tick()
    assert status(store, third) == "running"


# --- reconciling with Ray ---------------------------------------------------------------------


def test_a_running_study_whose_job_vanished_fails(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs
) -> None:
    (study_id,) = queue(store, 1)
    dispatcher.tick()
    del jobs.status[submission_id(study_id)]  # the Ray cluster restarted
    dispatcher.tick()
    ended = study(store, study_id)
    assert ended.status == "failed"
    assert ended.error == "its Ray job vanished (the Ray cluster restarted?)"


def test_a_claimed_study_not_yet_submitted_waits_a_minute(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs
) -> None:
    (study_id,) = queue(store, 1)
    # Another process claimed it (running, no submission id) and has not submitted it yet.
    assert store.transition(study_id, "running", expected={"queued"})
    dispatcher.tick()
    assert status(store, study_id) == "running" and jobs.submitted == []
    with store.engine.begin() as connection:
        connection.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(started_at=utcnow() - timedelta(seconds=61))
        )
    dispatcher.tick()
    assert study(store, study_id).error == "its Ray job vanished (the Ray cluster restarted?)"


@pytest.mark.parametrize("ray_status", [JobStatus.FAILED, JobStatus.SUCCEEDED])
def test_a_job_that_ended_without_its_driver_recording_it_fails_with_its_logs(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs, ray_status: JobStatus
) -> None:
    (study_id,) = queue(store, 1)
    dispatcher.tick()
    sid = submission_id(study_id)
    jobs.status[sid] = ray_status
    jobs.logs[sid] = "x" * LOG_TAIL_CHARS + "Traceback: /srv/clrstudy/data: out of memory"
    dispatcher.tick()
    ended = study(store, study_id)
    assert ended.status == "failed"
    # The owner gets a clean message; the log, with the server's paths, is for admins.
    assert ended.error == (
        f"its Ray job ended ({ray_status.value}) without a result; the service's log and its "
        "admins (error_detail) have the job's log"
    )
    tail = "x" * LOG_TAIL_CHARS + "Traceback: /srv/clrstudy/data: out of memory"
    assert ended.error_detail == tail[-LOG_TAIL_CHARS:]


def test_a_job_whose_logs_are_gone_still_ends_its_study(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs
) -> None:
    (study_id,) = queue(store, 1)
    dispatcher.tick()
    jobs.status[submission_id(study_id)] = JobStatus.FAILED  # and no logs
    dispatcher.tick()
    ended = study(store, study_id)
    assert ended.error is not None and ended.error.startswith("its Ray job ended (FAILED)")
    assert ended.error_detail is None


def test_a_stopped_job_or_a_cancel_request_ends_as_cancelled(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs
) -> None:
    stopped, flagged = queue(store, 2)
    dispatcher.tick()
    jobs.status[submission_id(stopped)] = JobStatus.STOPPED
    assert store.request_cancel(flagged) is not None
    jobs.status[submission_id(flagged)] = JobStatus.FAILED  # killed while cancelling
    dispatcher.tick()
    for study_id in (stopped, flagged):
        ended = study(store, study_id)
        assert (ended.status, ended.error) == ("cancelled", None)


def test_a_study_the_driver_ended_is_left_as_it_is(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs
) -> None:
    (study_id,) = queue(store, 1)
    dispatcher.tick()
    assert store.transition(study_id, "failed", expected={"running"}, error="diverged data")
    jobs.status[submission_id(study_id)] = JobStatus.FAILED
    dispatcher.tick()
    assert study(store, study_id).error == "diverged data"


def test_an_unreachable_jobs_api_raises_unavailable_and_changes_nothing(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs
) -> None:
    (study_id,) = queue(store, 1)
    dispatcher.tick()
    jobs.status_error = RuntimeError("Request failed with status code 502")
    with pytest.raises(RayUnavailable, match="502"):
        dispatcher.tick()
    assert status(store, study_id) == "running"


# --- cancelling -------------------------------------------------------------------------------


def test_a_cancelled_study_gets_its_job_stopped_after_the_grace(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs, clock: Clock
) -> None:
    (study_id,) = queue(store, 1)
    dispatcher.tick()
    sid = submission_id(study_id)
    jobs.status[sid] = JobStatus.RUNNING
    assert store.request_cancel(study_id) is not None
    dispatcher.tick()  # the first tick that sees the request starts the grace
    clock.now += GRACE_S
    dispatcher.tick()
    assert jobs.stopped == []  # the driver may still end it itself
    clock.now += 0.5
    dispatcher.tick()
    assert jobs.stopped == [sid]
    jobs.status[sid] = JobStatus.STOPPED
    dispatcher.tick()
    assert status(store, study_id) == "cancelled"


def test_a_driver_that_ends_its_cancelled_study_in_time_is_not_stopped(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs, clock: Clock
) -> None:
    (study_id,) = queue(store, 1)
    dispatcher.tick()
    jobs.status[submission_id(study_id)] = JobStatus.RUNNING
    assert store.request_cancel(study_id) is not None
    dispatcher.tick()
    clock.now += GRACE_S / 2
    assert store.transition(study_id, "cancelled", expected={"running"})
    jobs.status[submission_id(study_id)] = JobStatus.SUCCEEDED
    clock.now += GRACE_S
    dispatcher.tick()
    assert jobs.stopped == [] and status(store, study_id) == "cancelled"


# --- the end of a study whose driver died -----------------------------------------------------


def test_a_study_failed_mid_search_has_its_running_tuning_trials_closed(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    owner, _ = store.create_api_key("alice")
    study, _ = store.create_study(owner.owner.id, SPEC, "tuned")
    assert store.transition(study.id, "running", expected={"queued"})
    settings = Settings(database_url=db_url, storage_path=str(tmp_path / "ray"))
    name = f"{tuning_study_prefix(study.id)}/tuned"
    # What a driver that died leaves behind: one trial told, one RUNNING at iteration 60.
    with open_storage(tuning_storage(settings)) as storage:
        search = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        done = search.ask()
        done.suggest_float("lr", 0.001, 1.0, log=True)
        done.set_user_attr(STATE_ATTR, "completed")
        done.set_user_attr(ITERATIONS_ATTR, 200)
        search.tell(done, 0.9)
        left = search.ask()
        left.suggest_float("lr", 0.001, 1.0, log=True)
        left.report(0.4, 60)

    dispatcher = Dispatcher(store, RayCluster(settings), settings)
    running = next(s for s in store.running_studies() if s.id == study.id)
    dispatcher._end(running, "failed", "its Ray job vanished")

    assert store.get_study(study.id).status == "failed"
    with open_storage(tuning_storage(settings)) as storage:
        states = [t.state for t in optuna.load_study(study_name=name, storage=storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    (recorded,) = store.results(study.id)["tuning"]["tuned"]["trials"]
    assert (recorded["number"], recorded["state"], recorded["iterations_done"]) == (
        1,
        "interrupted",
        60,
    )
    # A second reconcile of the same study changes nothing (it is no longer running).
    dispatcher._end(running, "failed", "again")
    assert len(store.results(study.id)["tuning"]["tuned"]["trials"]) == 1


def test_a_study_without_tuned_arms_leaves_the_database_without_optuna_tables(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    owner, _ = store.create_api_key("alice")
    plain = {**SPEC, "arms": SPEC["arms"][:1]}
    study, _ = store.create_study(owner.owner.id, plain, "plain")
    assert store.transition(study.id, "running", expected={"queued"})
    settings = Settings(database_url=db_url, storage_path=str(tmp_path / "ray"))
    dispatcher = Dispatcher(store, RayCluster(settings), settings)
    dispatcher._end(store.running_studies()[0], "failed", "its Ray job vanished")
    assert store.get_study(study.id).status == "failed"
    from sqlalchemy import inspect

    assert "trials" not in inspect(store.engine).get_table_names()  # Optuna's


@pytest.mark.parametrize(("timeout_s", "limit"), [(None, "86400"), (60, "60")])
def test_a_study_past_its_wall_clock_limit_is_stopped_and_fails(
    store: Store, dispatcher: Dispatcher, jobs: FakeJobs, timeout_s: int | None, limit: str
) -> None:
    key, _ = store.create_api_key("alice")
    study_id = store.create_study(key.owner.id, study_spec(timeout_s=timeout_s), "long")[0].id
    dispatcher.tick()
    jobs.status[submission_id(study_id)] = JobStatus.RUNNING
    started = float(limit) - 5  # seconds ago: within the limit
    for seconds_ago in (started, float(limit) + 5):
        with store.engine.begin() as connection:
            connection.execute(
                update(Study)
                .where(Study.id == study_id)
                .values(started_at=utcnow() - timedelta(seconds=seconds_ago))
            )
        dispatcher.tick()
    ended = study(store, study_id)
    assert ended.status == "failed" and jobs.stopped == [submission_id(study_id)]
    assert ended.error == (
        f"the study ran past its wall-clock limit of {limit} s (timeout_s, at most "
        "MAX_STUDY_SECONDS) and was stopped"
    )
