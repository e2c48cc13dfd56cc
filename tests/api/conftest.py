"""The app on a real database (SQLite and PostgreSQL through `db_url`), without Ray."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from api.main import create_app
from service.settings import Settings
from service.sinks import DatabaseSink
from service.store import Store
from tests.factories import study_spec
from workers.events import (
    ArmsResolved,
    BoundsFound,
    EvalPoint,
    EvaluationPoints,
    Event,
    PlannedTrial,
    RangeTestEnded,
    RangeTestPoint,
    RangeTestPoints,
    StudyPlanned,
    TrialEnded,
    TrialStarted,
)

STUDIES = "/api/v1/studies"


class SettingsFor(Protocol):
    def __call__(self, database_url: str, **overrides: Any) -> Settings: ...


class Submit(Protocol):
    def __call__(self, headers: dict[str, str], **changes: Any) -> dict[str, Any]: ...


@pytest.fixture
def spec() -> Callable[..., dict[str, Any]]:
    """SPEC, a small valid study, with the given fields replaced."""
    return study_spec


@pytest.fixture
def settings_for(tmp_path: Path) -> SettingsFor:
    """Settings of a test app on a database; nothing from the environment or `.env`."""

    def make(database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "ray_address": None,
            "storage_path": str(tmp_path / "ray_results"),
            "max_running_studies_per_owner": 5,
            "max_queued_studies_per_owner": 5,
            "max_iterations_per_trial": 10_000,
            "max_seeds": 4,
            "max_tuning_trials": 5,
            "max_body_bytes": 1024 * 1024,
            **overrides,
        }
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(db_url: str, settings_for: SettingsFor) -> Settings:
    return settings_for(db_url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings, run_studies=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client of the running app: its lifespan (migrations) has run."""
    with TestClient(app) as client:
        yield client


@pytest.fixture
def store(client: TestClient) -> Store:
    """The running app's store."""
    app: Any = client.app
    store: Store = app.state.store
    return store


def strict_json(text: str) -> Any:
    """`text` parsed as JSON proper: NaN and Infinity, which Python's parser takes, raise."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(store: Store, name: str, admin: bool = False) -> dict[str, str]:
    """Headers authenticating as a new key of owner `name`."""
    _, key = store.create_api_key(name, admin=admin)
    return bearer(key)


@pytest.fixture
def alice(store: Store) -> dict[str, str]:
    return new_key(store, "alice")


@pytest.fixture
def bob(store: Store) -> dict[str, str]:
    return new_key(store, "bob")


@pytest.fixture
def admin(store: Store) -> dict[str, str]:
    return new_key(store, "root", admin=True)


@pytest.fixture
def submit(client: TestClient) -> Submit:
    """Submit SPEC (with changes) as `headers`' owner; the POST must be accepted."""

    def post(headers: dict[str, str], **changes: Any) -> dict[str, Any]:
        response = client.post(STUDIES, json=study_spec(**changes), headers=headers)
        assert response.status_code == 202, response.text
        study: dict[str, Any] = response.json()
        return study

    return post


# ---- taking the database away ----------------------------------------------------------


class TcpProxy:
    """A TCP forwarder to `target` that can be cut (connections dropped, port refused)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._serve()

    def _serve(self) -> None:
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return  # the listening socket was closed: the database is "down"
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        with suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._server.close()
        with self._lock:
            for connection in self._connections:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def restore(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._serve()


class Outage:
    """A database URL for an app, and a way to make that database unreachable and back.

    PostgreSQL is reached through a `TcpProxy` that is cut; a SQLite file's directory is
    moved away (and the app's pooled connections, which would still see the moved file,
    are closed, as a database restart would do).
    """

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        url = make_url(db_url)
        self.proxy: TcpProxy | None = None
        self.folder = tmp_path / "outage"
        if url.get_backend_name() == "sqlite":
            self.url = f"sqlite:///{self.folder / 'clrstudy.db'}"
        else:
            self.proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
            proxied = url.set(host="127.0.0.1", port=self.proxy.port)
            self.url = proxied.render_as_string(hide_password=False)

    def down(self, app: Any) -> None:
        if self.proxy is not None:
            self.proxy.cut()
        else:
            shutil.move(self.folder, self.folder.with_name("outage-away"))
            app.state.store.engine.dispose()

    def up(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        else:
            shutil.move(self.folder.with_name("outage-away"), self.folder)


@pytest.fixture
def outage(db_url: str, tmp_path: Path) -> Iterator[Outage]:
    outage = Outage(db_url, tmp_path)
    yield outage
    if outage.proxy is not None:
        outage.proxy.cut()


# ---- a study that has run --------------------------------------------------------------


def _curve(arm: str, seed: int) -> tuple[EvalPoint, ...]:
    """60 iterations evaluated every 10: triangular learns faster than fixed."""
    rate = 0.02 if arm == "triangular" else 0.01
    return tuple(
        EvalPoint(
            iteration=i,
            epoch=i / 21,
            lr=0.05,
            train_loss=None if i == 0 else 2.0 - i / 40,
            accuracy=min(0.95, 0.1 + rate * i) - seed / 1000,
            loss=2.0 - i / 50,
            elapsed_s=i / 100,
        )
        for i in range(0, 61, 10)
    )


def run_events(trials: tuple[PlannedTrial, ...]) -> list[Event]:
    """What a study's driver reports: plan, range test, bounds, resolved arms, trials."""
    range_points = tuple(
        RangeTestPoint(i, 0.001 + i * 0.02, 2.3 - i / 50, 2.3 - i / 60, i / 100 if i % 10 else None)
        for i in range(100)
    )
    arms = {
        "fixed": {
            "optimizer": {"name": "sgd", "options": {}},
            "policy": {"name": "fixed", "params": {"lr": 0.1}},
            "auto": ["lr"],
            "iterations": 60,
            "cycle_momentum": False,
        },
        "triangular": {
            "optimizer": {"name": "sgd", "options": {}},
            "policy": {
                "name": "triangular",
                "params": {"base_lr": 0.03, "max_lr": 0.1, "step_size": 20},
            },
            "auto": ["base_lr", "max_lr"],
            "iterations": 60,
            "cycle_momentum": False,
        },
    }
    events: list[Event] = [
        StudyPlanned(21, trials),
        RangeTestPoints(range_points),
        RangeTestEnded(99, "completed", "node-a"),
        BoundsFound(0.03, 0.1, "accuracy", "accuracy rises from 0.03 and flattens at 0.1"),
        ArmsResolved(arms),
    ]
    for trial in trials:
        points = _curve(trial.arm, trial.seed)
        events += [
            TrialStarted(trial.trial_id, trial.arm, trial.seed, trial.iterations, "node-a"),
            EvaluationPoints(trial.trial_id, points[:4]),
            EvaluationPoints(trial.trial_id, points[4:]),
            TrialEnded(trial.trial_id, "completed", 60, 0.6, node_id="node-a"),
        ]
    return events


PLANNED = tuple(
    PlannedTrial(f"{arm}-s{seed}", arm, seed, 60)
    for arm in ("fixed", "triangular")
    for seed in (0, 1)
)


def run_to_success(store: Store, study_id: str, triangular_scale: float = 1.0) -> None:
    """What a study's driver records, through its sink: a queued study run to success.

    The triangular arm's accuracies are scaled by `triangular_scale`.
    """
    assert store.transition(study_id, "running", expected={"queued"})
    sink = DatabaseSink(store, study_id)
    for event in run_events(PLANNED):
        if isinstance(event, EvaluationPoints) and event.trial_id.startswith("triangular"):
            points = tuple(
                dataclasses.replace(p, accuracy=p.accuracy * triangular_scale) for p in event.points
            )
            event = dataclasses.replace(event, points=points)
        sink.emit(event)
    sink.close()
    assert store.transition(study_id, "succeeded", expected={"running"})


@pytest.fixture
def trained_study(store: Store, submit: Submit, alice: dict[str, str]) -> str:
    """Alice's study, run to success through the driver's sink; its id."""
    study_id = submit(alice)["id"]
    assert store.transition(study_id, "running", expected={"queued"})
    store.set_submission_id(study_id, f"clrstudy-{study_id}")
    sink = DatabaseSink(store, study_id)
    for event in run_events(PLANNED):
        sink.emit(event)
    sink.close()
    assert store.transition(study_id, "succeeded", expected={"running"})
    return study_id
