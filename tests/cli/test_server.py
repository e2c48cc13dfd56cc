"""Server operations: `db upgrade`, `keys create|list|revoke`, and the demo's quiet uvicorn
logging."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from service.db import make_engine
from service.settings import get_settings
from service.store import Store
from tests.cli.conftest import Cli


@pytest.fixture
def database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """DATABASE_URL for the commands, which read their settings from the environment."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


def test_db_upgrade_then_keys_create_gives_a_working_key(cli: Cli, database: str) -> None:
    code, out, _ = cli("db", "upgrade")
    assert code == 0
    shown = make_url(database).render_as_string(hide_password=True)
    assert out.strip() == f"database at {shown} is at the latest revision"

    code, out, err = cli("keys", "create", "alice", "--admin")
    assert code == 0
    key = out.strip()
    assert "for admin 'alice'; shown only once" in err and key not in err
    engine = make_engine(database)
    try:
        owner = Store(engine).authenticate(key)
    finally:
        engine.dispose()
    assert owner is not None and (owner.name, owner.admin) == ("alice", True)


def test_keys_list_and_revoke_by_id_or_unambiguous_prefix(cli: Cli, database: str) -> None:
    keys = [cli("keys", "create", name)[1].strip() for name in ("alice", "bob")]
    cli("keys", "create", "root", "--admin")
    engine = make_engine(database)
    try:
        store = Store(engine)
        assert store.authenticate(keys[0]) is not None  # alice's key is used once

        code, out, _ = cli("keys", "list")
        assert code == 0
        header, *rows = out.splitlines()
        assert header.split() == ["ID", "NAME", "PREFIX", "CREATED", "LAST", "USED", "ADMIN"]
        alice, bob, root = (row.split() for row in rows)
        assert alice[:3] == ["1", "alice", keys[0][:12]] and alice[-1] == "no"
        assert bob[:3] == ["2", "bob", keys[1][:12]] and bob[-2:] == ["-", "no"]
        assert alice[-2] != "-" and root[1] == "root" and root[-1] == "yes"

        # Every prefix starts with "clr_": it names all three keys.
        code, _, err = cli("keys", "revoke", "clr_")
        assert code == 2 and "prefix of 3 keys (ids 1, 2, 3)" in err
        assert store.authenticate(keys[0]) is not None

        code, out, _ = cli("keys", "revoke", keys[0][:10])
        assert code == 0 and "revoked key 1" in out and "'alice'" in out
        assert store.authenticate(keys[0]) is None and store.authenticate(keys[1]) is not None
        code, out, _ = cli("keys", "revoke", "2")
        assert code == 0 and store.authenticate(keys[1]) is None
        code, _, err = cli("keys", "revoke", "2")
        assert code == 1 and "no unrevoked key '2'" in err
        assert "revoked" in cli("keys", "list")[1].splitlines()[1]
    finally:
        engine.dispose()


def test_the_demo_writes_the_access_log_to_its_file_and_uvicorn_says_only_warnings(
    tmp_path: Path,
) -> None:
    access_log = tmp_path / "var" / "access.log"
    code = f"""
import pathlib, threading, time, httpx, uvicorn
from fastapi import FastAPI
from cli.server import log_config
from service.ray_cluster import free_port

app = FastAPI()
app.get("/ping")(lambda: "pong")
port = free_port()
logging = log_config(pathlib.Path({str(access_log)!r}))
server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=logging))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
assert httpx.get(f"http://127.0.0.1:{{port}}/ping").json() == "pong"
server.should_exit = True
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert '"GET /ping HTTP/1.1" 200' in access_log.read_text()
    assert "\x1b[" not in access_log.read_text()  # no colours in a file
    assert result.stdout == ""
    assert "GET /ping" not in result.stderr and "Uvicorn running" not in result.stderr
