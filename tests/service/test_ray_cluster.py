"""The local Ray head's first start: a token where Ray never ran, and the real reason when
the head exits early."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.ray_cluster import (
    RayCluster,
    RayUnavailable,
    ensure_auth_token,
    free_port,
    is_alive,
    is_ray_head,
    last_meaningful_line,
)
from service.settings import Settings

# The end of what `ray start --head` printed on a machine where Ray never ran (Ray 2.60).
NO_TOKEN_LOG = """\
  File "/venv/lib/python3.11/site-packages/ray/scripts/scripts.py", line 1072, in start
    ensure_token_if_auth_enabled(system_config, create_token_if_missing=False)
  File "/venv/lib/python3.11/site-packages/ray/_private/authentication/authentication_token_setup.py", line 162, in ensure_token_if_auth_enabled
    raise AuthenticationError(
ray.exceptions.AuthenticationError: Token authentication is enabled but no authentication token was found. Ensure that the token for the cluster is available in a local file.
"""  # noqa: E501

# ... and where another process held its GCS port.
GCS_PORT_LOG = """\
  File "/venv/lib/python3.11/site-packages/ray/_private/node.py", line 1025, in _init_gcs_client
    raise RuntimeError(
RuntimeError: Failed to start GCS.  Last 1 lines of error files:
[2026-12-02 14:29:01,992 C 7353 7353] (gcs_server) grpc_server.cc:134: Check failed: server_ Failed to start the grpc server. The specified port is 6379.

.Please check /tmp/ray/session_x/logs/gcs_server.out for details. Last connection error: None
"""  # noqa: E501


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home folder where Ray never ran, and no token in the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    yield home


def test_a_token_is_created_owner_only_where_none_exists(fresh_home: Path) -> None:
    created = ensure_auth_token()
    path = fresh_home / ".ray" / "auth_token"
    assert created == path
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # Ray's own format: 32 random bytes, hex
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    # A second call finds it and leaves it alone.
    assert ensure_auth_token() is None
    assert path.read_text() == token


def test_an_existing_token_is_kept(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fresh_home / ".ray").mkdir()
    (fresh_home / ".ray" / "auth_token").write_text("a" * 64)
    assert ensure_auth_token() is None
    assert (fresh_home / ".ray" / "auth_token").read_text() == "a" * 64
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 64)
    (fresh_home / ".ray" / "auth_token").unlink()
    assert ensure_auth_token() is None  # the environment's token is enough
    assert not (fresh_home / ".ray" / "auth_token").exists()


def test_a_named_token_path_that_holds_nothing_is_an_error(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = fresh_home / "cluster-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(missing))
    with pytest.raises(RayUnavailable, match=r"RAY_AUTH_TOKEN_PATH=.*cluster-token holds no"):
        ensure_auth_token()
    assert not (fresh_home / ".ray").exists()  # nothing made behind the operator's back
    missing.write_text("c" * 64)
    assert ensure_auth_token() is None


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (NO_TOKEN_LOG, "ray.exceptions.AuthenticationError: Token authentication is enabled"),
        (GCS_PORT_LOG, "RuntimeError: Failed to start GCS.  Last 1 lines of error files: ["),
        ("starting...\n\nsomething odd happened\n\n", "something odd happened"),
        ("", "(no output)"),
    ],
)
def test_the_last_meaningful_line_says_why(log: str, expected: str) -> None:
    assert last_meaningful_line(log.splitlines()).startswith(expected)


def test_a_head_that_cannot_take_its_port_says_so(fresh_home: Path, tmp_path: Path) -> None:
    """A GCS port another process holds (as Redis holds 6379) is named at once."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'unused.db'}",
            ray_head_port=port,
            ray_dashboard_port=free_port(),
            ray_num_cpus=1,
            storage_path=str(tmp_path / "var" / "ray_results"),
        )
        cluster = RayCluster(settings)
        with pytest.raises(RayUnavailable) as raised:
            cluster.start()
    message = str(raised.value)
    assert f"port {port}, the local Ray head's GCS port, is taken" in message, message
    assert "set RAY_HEAD_PORT" in message
    # Refused before anything started: no head, no pid file, no token made for nothing.
    assert cluster.process is None
    assert not list(tmp_path.glob("**/ray-head-*.pid"))
    assert not (fresh_home / ".ray").exists()


# --- who stops a running head -----------------------------------------------------------------


class Dashboard:
    """Something answering on the dashboard's port, as a running head's dashboard does."""

    def __init__(self) -> None:
        import http.server
        import threading

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _process(*args: str) -> subprocess.Popen[bytes]:
    """A sleeping process in a session of its own with these arguments, reaped when it ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", *args], start_new_session=True
    )
    threading.Thread(target=process.wait, daemon=True).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and args and not is_ray_head(process.pid):
        time.sleep(0.05)
    return process


@pytest.fixture
def running_head(tmp_path: Path) -> Iterator[tuple[Settings, Dashboard]]:
    dashboard = Dashboard()
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        ray_head_port=free_port(),
        ray_dashboard_port=dashboard.port,
        storage_path=str(tmp_path / "var" / "ray_results"),
    )
    Path(settings.storage_path).parent.mkdir(parents=True)
    yield settings, dashboard
    dashboard.close()


def _pid_file(settings: Settings, owner: int | None, head: int) -> Path:
    path = Path(settings.storage_path).parent / f"ray-head-{settings.ray_head_port}.pid"
    path.write_text(json.dumps({"owner": owner, "head": head}))
    return path


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_head_another_live_process_owns_is_used_and_never_stopped(
    running_head: tuple[Settings, Dashboard],
) -> None:
    settings, _ = running_head
    head, owner = _process("ray", "start", "--head"), _process()
    try:
        pid_file = _pid_file(settings, owner.pid, head.pid)
        cluster = RayCluster(settings)
        cluster.start()
        cluster.stop()
        assert is_ray_head(head.pid)
        assert json.loads(pid_file.read_text()) == {"owner": owner.pid, "head": head.pid}
    finally:
        for process in (head, owner):
            os.killpg(process.pid, signal.SIGKILL)


def test_a_head_whose_owner_died_is_adopted_and_stopped_on_shutdown(
    running_head: tuple[Settings, Dashboard],
) -> None:
    settings, _ = running_head
    head = _process("ray", "start", "--head")
    try:
        pid_file = _pid_file(settings, _dead_pid(), head.pid)
        cluster = RayCluster(settings)
        cluster.start()
        assert json.loads(pid_file.read_text()) == {"owner": os.getpid(), "head": head.pid}
        cluster.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and is_alive(head.pid):
            time.sleep(0.05)
        assert not is_alive(head.pid) and not pid_file.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)


def test_a_pid_file_naming_a_process_that_is_not_a_ray_head_is_never_signalled(
    running_head: tuple[Settings, Dashboard],
) -> None:
    settings, _ = running_head
    stranger = _process()  # the pid was reused by something else
    try:
        _pid_file(settings, _dead_pid(), stranger.pid)
        cluster = RayCluster(settings)
        cluster.start()
        cluster.stop()
        time.sleep(0.2)
        assert is_alive(stranger.pid)
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
