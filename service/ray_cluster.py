"""The Ray cluster the service submits studies to: a given one, or a local head it starts.

The local head runs `ray start --head --block` in a process group of its own, so it (and
the study jobs on it) outlive an API process that dies; a restarted service finds it on
its port and uses it again. A clean shutdown stops the head only if this process started
it, by signalling that process group: every Ray process it spawned goes with it.

Ray's token authentication stays on. Clients of a running cluster (this process's Jobs
client, `ray.init(address=...)` in a job) need `RAY_AUTH_MODE=token` and the token, which
`ray start` keeps in `~/.ray/auth_token` (or `RAY_AUTH_TOKEN` on a cluster).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from service.settings import Settings

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
AUXILIARY_PORTS = (
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)


def free_port() -> int:
    """A TCP port nothing listens on at the moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayUnavailable(RuntimeError):
    """The Ray cluster (or its dashboard's Jobs API) cannot be reached."""


def client_environment() -> None:
    """Make this process a token-authenticated client of the cluster."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")


class RayCluster:
    """Where studies run: `RAY_ADDRESS`'s cluster, or a local head started on demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        client_environment()

    @property
    def dashboard_url(self) -> str:
        if self.settings.ray_dashboard_url:
            return self.settings.ray_dashboard_url.rstrip("/")
        host = self.settings.ray_dashboard_host
        return f"http://{host}:{self.settings.ray_dashboard_port}"

    @property
    def local(self) -> bool:
        return not self.settings.ray_address

    def reachable(self) -> bool:
        """Whether the dashboard (and with it the Jobs API) answers."""
        try:
            response = httpx.get(f"{self.dashboard_url}/api/version", timeout=2.0)
        except httpx.HTTPError:
            return False
        # 401 without the token still proves the dashboard is up.
        return response.status_code in (200, 401)

    @property
    def _pid_file(self) -> Path:
        folder = Path(self.settings.storage_path).resolve().parent
        return folder / f"ray-head-{self.settings.ray_head_port}.pid"

    def start(self) -> None:
        """Start the local head unless one already answers; no-op for a given cluster.

        A head that answers already is the one an earlier service process started (it
        outlives a crash): it is adopted, and stopped on shutdown like one started here.
        """
        if not self.local:
            return
        if self.reachable():
            log.info("using the local Ray head already running at %s", self.dashboard_url)
            return
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        command = [
            ray,
            "start",
            "--head",
            "--block",
            f"--port={self.settings.ray_head_port}",
            "--node-ip-address=127.0.0.1",
            f"--dashboard-host={self.settings.ray_dashboard_host}",
            f"--dashboard-port={self.settings.ray_dashboard_port}",
            "--include-dashboard=true",
            "--disable-usage-stats",
            # Ray's fixed defaults for these (10001, 52365, ...) may be taken, by another
            # Ray among others: free ones, chosen now.
            *(f"--{name}={free_port()}" for name in AUXILIARY_PORTS),
        ]
        if self.settings.ray_num_cpus is not None:
            command.append(f"--num-cpus={self.settings.ray_num_cpus}")
        log_dir = Path(self.settings.storage_path).resolve().parent
        log_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting a local Ray head: %s", " ".join(command))
        with open(log_dir / "ray-head.log", "ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=head_environment(self.settings),
                start_new_session=True,
            )
        self._pid_file.write_text(str(self.process.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RayUnavailable(
                    f"the local Ray head exited with code {self.process.returncode}; "
                    f"see {log_dir / 'ray-head.log'} (is port {self.settings.ray_head_port} "
                    "free? set RAY_HEAD_PORT)"
                )
            if self.reachable():
                return
            time.sleep(0.5)
        self.stop()
        raise RayUnavailable(f"the local Ray head did not answer within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stop the local head (and every Ray process it spawned); a given cluster stays."""
        if not self.local:
            return
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            self.process = None
        elif self._pid_file.exists():
            # Adopted from an earlier service process: its process group, by its pid file.
            pgid = int(self._pid_file.read_text())
            try:
                os.killpg(pgid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and self.reachable():
                    time.sleep(0.5)
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._pid_file.unlink(missing_ok=True)

    def jobs(self) -> JobSubmissionClient:
        from ray.job_submission import JobSubmissionClient

        try:
            return JobSubmissionClient(self.dashboard_url)
        except Exception as error:  # Ray raises ConnectionError, RuntimeError, auth errors
            raise RayUnavailable(f"Ray Jobs API at {self.dashboard_url}: {error}") from error


def head_environment(settings: Settings) -> dict[str, str]:
    """The local head's environment: this one, with paths made absolute.

    Study jobs inherit it, so the job driver reads the same settings (the database URL
    among them) from its own environment; nothing secret goes into a job's entry point,
    metadata or runtime_env, which the dashboard shows.
    """
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "token"
    # Ray 2.60 drains a node for up to 30 s on SIGTERM; the service's shutdown (and the
    # cancel of its studies) has already stopped what matters.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DATABASE_URL"] = absolute_sqlite_url(settings.database_url)
    env["STORAGE_PATH"] = str(Path(settings.storage_path).resolve())
    env["DATA_ROOT"] = str(Path(settings.data_root).resolve())
    project = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project, env.get("PYTHONPATH")) if p)
    return env


def absolute_sqlite_url(url: str) -> str:
    """`sqlite:///./var/x.db` -> `sqlite:////abs/var/x.db`; other URLs unchanged."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/"):
        return url
    path = url[len(prefix) :]
    if path in ("", ":memory:"):
        return url
    return prefix + str(Path(path).resolve())
