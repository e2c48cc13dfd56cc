"""The command line against a live server: uvicorn serving the app on a free port, on a real
database (SQLite and PostgreSQL through `db_url`), without Ray (no study ever starts)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import uvicorn

from api.main import create_app
from cli.main import main
from service.ray_cluster import free_port
from service.settings import Settings
from service.store import Store
from tests.factories import study_spec


@dataclass(frozen=True)
class LiveServer:
    url: str
    store: Store
    settings: Settings


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """The app served over HTTP in a thread of this process, until the test ends."""
    settings = Settings(
        _env_file=None,
        database_url=db_url,
        ray_address=None,
        storage_path=str(tmp_path / "ray_results"),
        max_seeds=4,
    )
    app = create_app(settings, run_studies=False)
    port = free_port()
    # log_config None: uvicorn leaves this process's logging as it is.
    uvicorn_server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app.state.store, settings)
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)


class Cli(Protocol):
    def __call__(self, *argv: str) -> tuple[int, str, str]: ...


@pytest.fixture
def alice(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI talks to the server as alice (CLRSTUDY_URL, CLRSTUDY_TOKEN); her key."""
    _, key = server.store.create_api_key("alice")
    monkeypatch.setenv("CLRSTUDY_URL", server.url)
    monkeypatch.setenv("CLRSTUDY_TOKEN", key)
    return key


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """`clrstudy ARGV...` in this process: its exit status, stdout and stderr."""

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    """tests/factories.SPEC as a JSON spec file."""
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(study_spec()), encoding="utf-8")
    return path


def submitted(cli: Cli, spec_file: Path) -> str:
    """The id of a study submitted with `clrstudy submit`."""
    code, out, err = cli("submit", str(spec_file))
    assert code == 0, err
    return out.strip()
