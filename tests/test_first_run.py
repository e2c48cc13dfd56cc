"""A newcomer's first commands, on a machine where Ray never ran: a fresh, empty HOME (no
`~/.ray/auth_token`), no RAY_* or CLRSTUDY_* variable, a fresh working folder.

- `clrstudy demo` (what `make run` runs) reaches a succeeded study, and Ctrl-C leaves no
  Ray process behind;
- `clrstudy run` (`ray.init(address="local")` makes the token itself) succeeds;
- `scripts/local-cluster` (it generates the token) starts its two nodes and stops them.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from service.ray_cluster import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CLRSTUDY = Path(sys.executable).parent / "clrstudy"

# The demo's code path (service, dispatcher, Ray job, driver, Tune trials, report) on a
# spec small enough for the suite: one arm, one seed, digits.
TINY_SPEC = {
    "name": "first run",
    "dataset": "digits",
    "model": "mlp",
    "batch_size": 64,
    "iterations": 100,
    "eval_every": 25,
    "seeds": [0],
    "arms": [{"name": "fixed", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 0.05}}],
    "resources_per_trial": {"cpu": 1},
}


@pytest.fixture
def newcomer(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working folder and the environment of a user on a machine where Ray never ran."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RAY_", "CLRSTUDY_", "XDG_", "PYTEST_"))
    }
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPEC))
    yield work, env
    assert not processes_with_home(home), "a process of this test outlived it"


def processes_with_home(home: Path) -> list[str]:
    """Command lines of the live processes whose environment has this HOME."""
    marker = f"HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def wait_until_gone(home: Path, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_with_home(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_demo_reaches_a_succeeded_study_and_ctrl_c_leaves_no_ray(
    newcomer: tuple[Path, dict[str, str]],
) -> None:
    work, env = newcomer
    home = Path(env["HOME"])
    env.update(
        PORT=str(free_port()),
        RAY_HEAD_PORT=str(free_port()),
        RAY_DASHBOARD_PORT=str(free_port()),
        RAY_NUM_CPUS="2",
    )
    demo = subprocess.Popen(
        [str(CLRSTUDY), "demo", "--spec", "tiny.yaml"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert demo.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert demo.stdout is not None
        for raw in demo.stdout:
            lines.put(raw.decode(errors="replace").rstrip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ended = re.compile(r"^study \S+ (succeeded|failed|cancelled)\b")
    outcome = None
    deadline = time.monotonic() + 240
    try:
        while outcome is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert demo.poll() is None, "the demo exited:\n" + "\n".join(seen)
                continue
            seen.append(line)
            if match := ended.match(line):
                outcome = match.group(1)
        transcript = "\n".join(seen)
        assert outcome == "succeeded", transcript
        # The lines a newcomer is promised, and no access log among them.
        assert re.search(r"^API key \(admin 'local'\), shown once: \S+", transcript, re.M)
        assert re.search(
            r"^submitted tiny\.yaml: http://127\.0\.0\.1:\d+/api/v1/studies/", transcript, re.M
        )
        assert "/report.html" in transcript
        assert "GET /api/v1/studies" not in transcript and "HTTP/1.1" not in transcript
        token = home / ".ray" / "auth_token"
        assert token.exists() and stat.S_IMODE(token.stat().st_mode) == 0o600
        assert token.read_text() not in transcript
        time.sleep(1)  # the report lines after the outcome
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            raise
        finally:
            reader.join(timeout=10)
            demo.stdout.close()
    assert demo.returncode == 0, "\n".join(seen)
    left = wait_until_gone(home, 30)
    assert not left, f"processes left after Ctrl-C: {left}"
    assert (work / "var" / "clrstudy.db").exists()  # the embedded default, in the work folder
    access_log = (work / "var" / "access.log").read_text()
    assert "POST /api/v1/studies" in access_log


def test_clrstudy_run_makes_its_own_token(newcomer: tuple[Path, dict[str, str]]) -> None:
    work, env = newcomer
    done = subprocess.run(
        [str(CLRSTUDY), "run", "tiny.yaml", "--out", "out"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "study succeeded" in done.stderr
    assert (Path(env["HOME"]) / ".ray" / "auth_token").exists()
    assert (work / "out" / "report.html").exists()
    assert not wait_until_gone(Path(env["HOME"]), 30)


def test_local_cluster_script_makes_its_own_token(
    newcomer: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    work, env = newcomer
    env.update(
        HEAD_PORT=str(free_port()),
        DASHBOARD_PORT=str(free_port()),
        LOCAL_CLUSTER_STATE=str(tmp_path / "cluster"),
        STORAGE_PATH=str(work / "var" / "ray_results"),
    )
    script = str(ROOT / "scripts" / "local-cluster")

    def call(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
        )

    try:
        started = call("start")
        assert started.returncode == 0, started.stdout + started.stderr
        status = call("status")
        assert status.stdout.strip().splitlines()[-1] == "2", status.stdout + status.stderr
        assert (Path(env["HOME"]) / ".ray" / "auth_token").exists()
    finally:
        stopped = call("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not wait_until_gone(Path(env["HOME"]), 30)
