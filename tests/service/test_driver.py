"""The Ray job driver without Ray: `drive` on a real database, with the workers' runner
replaced by a stand-in that reports through the driver's sink (the runner has tests of its own,
with Ray, in tests/workers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service import driver
from service.settings import Settings, get_settings
from service.store import Store
from tests.factories import study_spec
from workers.events import (
    ArmsResolved,
    PlannedTrial,
    RangeTestPoint,
    RangeTestPoints,
    ResultSink,
    StudyPlanned,
    TrialEnded,
    TrialStarted,
)
from workers.runner import RunOptions, StudyFailed, StudyOutcome
from workers.spec import StudySpec

Run = Callable[[StudySpec, ResultSink, RunOptions, threading.Event], StudyOutcome]


@pytest.fixture
def settings(db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The driver's settings, read from its node's environment: this test's database."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("MAX_SEEDS", "2")
    monkeypatch.setattr(driver, "CANCEL_POLL_S", 0.01)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def running(store: Store) -> str:
    """A study the dispatcher has claimed: running."""
    key, _ = store.create_api_key("alice")
    study, _ = store.create_study(key.owner.id, study_spec(), "digits")
    assert store.transition(study.id, "running", expected={"queued"})
    return study.id


def runner(monkeypatch: pytest.MonkeyPatch, run: Run) -> list[dict[str, Any]]:
    """Put `run` in the runner's place; the calls it gets."""
    calls: list[dict[str, Any]] = []

    def run_study(
        spec: StudySpec, sink: ResultSink, options: RunOptions, *, cancel: threading.Event
    ) -> StudyOutcome:
        calls.append({"spec": spec, "options": options})
        return run(spec, sink, options, cancel)

    monkeypatch.setattr(driver, "run_study", run_study)
    return calls


def test_tuning_storage_is_the_service_database_with_its_password() -> None:
    settings = Settings(_env_file=None, database_url="postgresql://clr:s3cret@db:5432/clrstudy")
    assert driver.tuning_storage(settings) == "postgresql+psycopg://clr:s3cret@db:5432/clrstudy"
    assert driver.tuning_study_prefix("abc") == "clrstudy-abc"


def test_a_study_that_succeeds_is_recorded_with_its_phases(
    store: Store, settings: Settings, running: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    phases = []

    def run(spec: StudySpec, sink: ResultSink, options: RunOptions, cancel: Any) -> StudyOutcome:
        sink.emit(RangeTestPoints((RangeTestPoint(0, 0.001, 2.3, 2.3),)))
        phases.append(store.get_study(running).phase)  # type: ignore[union-attr]
        sink.emit(ArmsResolved({}))
        phases.append(store.get_study(running).phase)  # type: ignore[union-attr]
        return StudyOutcome("succeeded")

    calls = runner(monkeypatch, run)
    assert driver.drive(running) == 0
    study = store.get_study(running)
    assert study is not None and (study.status, study.phase, study.error) == (
        "succeeded",
        "done",
        None,
    )
    assert phases == ["range_test", "trials"]
    (call,) = calls
    assert call["spec"].seeds == [0, 1]  # the stored spec, validated again
    options = call["options"]
    assert (options.experiment, options.ray_address) == (running, "auto")
    assert options.limits == settings.limits()
    assert options.tuning_study_prefix == f"clrstudy-{running}"
    assert options.tuning_storage == driver.tuning_storage(settings)
    results = store.results(running)
    assert results is not None and len(results["range_test"]["points"]) == 1  # sink flushed


def test_a_study_the_runner_fails_is_failed_with_its_reason(
    store: Store, settings: Settings, running: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(*_: Any) -> StudyOutcome:
        raise StudyFailed("the range test gave no usable bounds")

    runner(monkeypatch, run)
    assert driver.drive(running) == 1
    study = store.get_study(running)
    assert study is not None and study.status == "failed" and study.phase == "done"
    assert study.error == "the range test gave no usable bounds"


def test_a_bug_in_the_runner_still_ends_the_study_as_failed(
    store: Store, settings: Settings, running: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_root = Path(settings.data_root).resolve()

    def run(*_: Any) -> StudyOutcome:
        raise KeyError(f"momentum, reading {data_root}/x.npz")

    runner(monkeypatch, run)
    assert driver.drive(running) == 1
    study = store.get_study(running)
    assert study is not None and study.status == "failed"
    # The owner is told what failed, without the traceback or the server's folders;
    # admins read the traceback in error_detail.
    assert study.error == "the study's driver failed: KeyError: 'momentum, reading DATA_ROOT/x.npz'"
    assert study.error_detail is not None and "Traceback" in study.error_detail
    assert str(data_root) in study.error_detail and __file__ in study.error_detail


def test_a_cancel_request_reaches_the_runner_and_ends_the_study_cancelled(
    store: Store, settings: Settings, running: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(spec: StudySpec, sink: ResultSink, options: RunOptions, cancel: Any) -> StudyOutcome:
        assert not cancel.is_set()
        store.request_cancel(running)
        assert cancel.wait(10), "the driver did not pass the cancel request on"
        return StudyOutcome("succeeded")  # what a runner stopped in its last trial may say

    runner(monkeypatch, run)
    assert driver.drive(running) == 0
    study = store.get_study(running)
    assert study is not None and study.status == "cancelled" and study.phase == "done"


def test_a_study_that_is_not_running_is_not_run(
    store: Store, settings: Settings, running: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = runner(monkeypatch, lambda *_: StudyOutcome("succeeded"))
    assert store.transition(running, "failed", expected={"running"}, error="reconciled")
    assert driver.drive(running) == 1
    assert driver.drive("no-such-study") == 1
    assert calls == []
    study = store.get_study(running)
    assert study is not None and study.error == "reconciled"


def test_main_wants_one_study_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert driver.main([]) == 2
    assert "usage: python -m service.driver STUDY_ID" in capsys.readouterr().err


def test_a_spec_admitted_by_a_larger_api_host_runs_on_a_smaller_head(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-trial CPU limit is the API host's; the driver's machine may have fewer CPUs,
    and the runner checks the trial against the cluster's nodes instead."""
    key, _ = store.create_api_key("alice")
    spec = study_spec(resources_per_trial={"cpu": settings.trial_cpus() + 1})
    study, _ = store.create_study(key.owner.id, spec, "digits")
    assert store.transition(study.id, "running", expected={"queued"})
    calls = runner(monkeypatch, lambda *_: StudyOutcome("succeeded"))
    assert driver.drive(study.id) == 0
    assert calls[0]["spec"].resources_per_trial.cpu == settings.trial_cpus() + 1


def test_a_trials_traceback_reaches_the_owner_as_its_exception_line(
    store: Store, settings: Settings, running: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Path(settings.storage_path).resolve()
    trial_error = (
        "Failure # 1 (occurred at 2026-12-02_15-00-00)\n"
        "Traceback (most recent call last):\n"
        '  File "/opt/venv/lib/python3.11/site-packages/ray/tune/trainable.py", line 3, in f\n'
        "    raise ValueError(...)\n"
        f"ValueError: cannot write {storage}/exp/trial/checkpoint\n"
    )

    def run(*_: Any) -> StudyOutcome:
        raise StudyFailed(f"the range test trial failed: {trial_error}")

    runner(monkeypatch, run)
    assert driver.drive(running) == 1
    study = store.get_study(running)
    assert study is not None and study.error == (
        "the range test trial failed: Failure # 1 (occurred at 2026-12-02_15-00-00) "
        "ValueError: cannot write STORAGE_PATH/exp/trial/checkpoint"
    )
    assert study.error_detail == f"the range test trial failed: {trial_error}"


def test_a_failed_trials_error_reaches_the_owner_without_the_servers_paths(
    store: Store, settings: Settings, running: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = Path(settings.data_root).resolve()
    error = (
        "Traceback (most recent call last):\n"
        '  File "/opt/venv/lib/python3.11/site-packages/ray/tune/trainable.py", line 3\n'
        f"FileNotFoundError: {data}/cifar-10-batches-py/data_batch_1\n"
    )

    def run(spec: StudySpec, sink: ResultSink, options: RunOptions, cancel: Any) -> StudyOutcome:
        sink.emit(StudyPlanned(21, (PlannedTrial("fixed-s0", "fixed", 0, 60),)))
        sink.emit(TrialStarted("fixed-s0", "fixed", 0, 60))
        sink.emit(TrialEnded("fixed-s0", "failed", 10, 1.0, error))
        return StudyOutcome("succeeded")

    runner(monkeypatch, run)
    assert driver.drive(running) == 0
    (trial,) = store.trials(running)
    assert trial.error == "FileNotFoundError: DATA_ROOT/cifar-10-batches-py/data_batch_1"
