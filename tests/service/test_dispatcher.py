"""The dispatcher's end of a study whose driver died: its Optuna searches are closed."""

from __future__ import annotations

from collections.abc import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from service.db import make_engine, upgrade
from service.dispatcher import Dispatcher
from service.driver import tuning_storage, tuning_study_prefix
from service.ray_cluster import RayCluster
from service.settings import Settings
from service.store import Store
from tests.factories import tuned_spec
from workers.tuning import ITERATIONS_ATTR, STATE_ATTR, open_storage

SPEC = tuned_spec()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    upgrade(db_url)
    engine = make_engine(db_url)
    yield Store(engine)
    engine.dispose()


def test_a_study_failed_mid_search_has_its_running_tuning_trials_closed(
    store: Store, db_url: str, tmp_path
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
    store: Store, db_url: str, tmp_path
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
