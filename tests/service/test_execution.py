"""The service end to end: real `clrstudy serve` processes, a real embedded Ray head, Ray Jobs.

One service (and its Ray head) per database serves every scenario in turn, since a head
takes 10-30 s to start here: a study survives a SIGKILL of the API process and finishes
with every point stored once, and its report opens in a real browser (headless Chromium,
screenshot kept in the test's folder); a study cancelled during its range test and one
cancelled during its trials end `cancelled` with their Ray jobs stopped and no trial
process left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from sqlalchemy import func, select

from service.db import make_engine, upgrade
from service.models import EvalPoint, Trial
from service.ray_cluster import RayCluster, free_port
from service.settings import Settings
from service.store import Store
from tests.browser import chromium

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 180.0


def check_report_in_a_browser(base: str, key: str, study_id: str, out: Path) -> None:
    """Log in on `/` as a person would, open the study's report, look at it."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    with chromium(out / "chromium-profile") as browser:
        browser.get(f"{base}/")
        browser.find_element(By.NAME, "api_key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#login button").click()
        link = browser.find_element(By.CSS_SELECTOR, f"a[href*='{study_id}/report.html']")
        link.click()
        summary = browser.find_element(By.ID, "summary")
        assert summary.is_displayed()
        rows = summary.find_elements(By.CSS_SELECTOR, "tbody tr")
        names = [r.find_element(By.TAG_NAME, "td").text for r in rows]
        assert len(names) == 3, names
        assert "fixed" in names[0] and "tri" in names[1] and "tuned" in names[2], names
        verdicts = browser.find_element(By.ID, "verdicts").text
        assert "tri" in verdicts
        # The tuned arm's search: one row per tuning trial, the best one marked.
        tuning = browser.find_element(By.ID, "tuning")
        assert tuning.is_displayed() and f"clrstudy-{study_id}/tuned" in tuning.text
        assert len(tuning.find_elements(By.CSS_SELECTOR, "tbody tr")) == 3
        assert len(tuning.find_elements(By.CSS_SELECTOR, "tr.best")) == 1
        plots = browser.find_elements(By.CSS_SELECTOR, "figure.plot svg")
        assert len(plots) == 3  # accuracy, LR schedules, range test
        for plot in plots:
            assert plot.is_displayed()
            assert plot.size["width"] > 200 and plot.size["height"] > 100
        shot = out / "report.png"
        browser.save_screenshot(str(shot))
    with Image.open(shot) as image:  # not blank: a page of plots has many colours
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50


def small_spec(name: str, *, iterations: int, range_test: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "dataset": "digits",
        "model": "mlp",
        "batch_size": 64,
        "iterations": iterations,
        "eval_every": 25,
        "seeds": [0],
        "arms": [
            {"name": "fixed", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 0.05}},
            {
                "name": "tri",
                "optimizer": "sgd",
                "policy": {
                    "name": "triangular",
                    "base_lr": "auto",
                    "max_lr": "auto",
                    "step_size": 50,
                },
            },
        ],
        "resources_per_trial": {"cpu": 1},
    }
    if range_test:
        spec["range_test"] = {"min_lr": 0.001, "max_lr": 1.0, "iterations": 200, "eval_every": 5}
    else:
        spec["arms"] = spec["arms"][:1]
    return spec


class Service:
    """A `clrstudy serve` process; its Ray head outlives it unless it stops cleanly."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "RAY_HEAD_PORT": str(free_port()),
            "RAY_DASHBOARD_PORT": str(free_port()),
            "RAY_NUM_CPUS": "2",
            "STORAGE_PATH": str(root / "ray_results"),
            "MAX_RUNNING_STUDIES": "1",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.root / "service.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(lambda: self._ready(), START_TIMEOUT_S, "the service to be ready", self)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no shutdown code runs
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=120)

    def log(self) -> str:
        return (self.root / "service.log").read_text(errors="replace")[-6000:]

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.env['RAY_DASHBOARD_PORT']}"


def wait_for(check: Callable[[], Any], timeout: float, what: str, service: Service) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; service log:\n{service.log()}")


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[Service]:
    upgrade(db_url)
    running = Service(tmp_path, db_url)
    try:
        yield running
    finally:
        running.stop()
        # A service that did not stop cleanly leaves its head: stop it the same way.
        settings = Settings(
            database_url=db_url,
            ray_head_port=int(running.env["RAY_HEAD_PORT"]),
            ray_dashboard_port=int(running.env["RAY_DASHBOARD_PORT"]),
            storage_path=running.env["STORAGE_PATH"],
        )
        RayCluster(settings).stop()


def study_processes(study_id: str) -> list[str]:
    """The study's job driver and Tune trial actors (`ray::ImplicitFunc`) still running."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [
        line
        for line in out.stdout.splitlines()
        if "ray::ImplicitFunc" in line or f"service.driver {study_id}" in line
    ]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    engine = make_engine(db_url)
    yield Store(engine)
    engine.dispose()


def test_studies_survive_an_api_crash_and_cancel_cleanly(service: Service, store: Store) -> None:
    _, key = store.create_api_key("alice")
    headers = {"Authorization": f"Bearer {key}"}
    service.start()
    api = httpx.Client(base_url=f"{service.url}/api/v1", headers=headers, timeout=30)

    def study(study_id: str) -> dict[str, Any]:
        return api.get(f"/studies/{study_id}").json()

    # 1. A study runs as a Ray job; the API process dies mid-run; a new one takes over.
    # With a tuned arm: its Optuna search runs in the driver and lives in our database.
    crash = small_spec("crash", iterations=2000)
    crash["arms"].append(
        {
            "name": "tuned",
            "optimizer": "sgd",
            "policy": "fixed",
            "tuning": {
                "trials": 3,
                "space": {"lr": {"low": 0.01, "high": 0.5}},
                "max_iterations": 100,
                "grace_period": 25,
                "reduction_factor": 2,
            },
        }
    )
    response = api.post("/studies", json=crash)
    assert response.status_code == 202, response.text
    first = response.json()["id"]
    wait_for(
        lambda: study(first)["progress"]["iterations_done"] > 0, 180, "trial progress", service
    )
    view = study(first)
    assert view["status"] == "running"
    assert view["ray_job_id"] == f"clrstudy-{first}"
    assert view["bounds"] is not None
    service.kill()
    service.start()  # finds the Ray head still running and uses it again
    api.close()
    api = httpx.Client(base_url=f"{service.url}/api/v1", headers=headers, timeout=30)
    done = wait_for(
        lambda: (s := study(first))["status"] in ("succeeded", "failed", "cancelled") and s,
        300,
        "the study to finish",
        service,
    )
    assert done["status"] == "succeeded", done.get("error")
    results = api.get(f"/studies/{first}/results").json()
    assert {t["state"] for t in results["trials"]} == {"completed"}
    for trial in results["trials"]:
        assert [p["iteration"] for p in trial["points"]] == list(range(0, 2001, 25))
    with store._session() as session:  # every point exactly once, in the database itself
        points = session.scalar(select(func.count()).select_from(EvalPoint))
        trials = session.scalar(select(func.count()).select_from(Trial))
    assert (points, trials) == (3 * 81, 3)
    tuning = results["tuning"]["tuned"]
    assert tuning["optuna_study"] == f"clrstudy-{first}/tuned"
    assert len(tuning["trials"]) == 3 and tuning["best"] is not None
    best = next(t for t in tuning["trials"] if t["number"] == tuning["best"]["number"])
    assert best["state"] == "completed" and best["iterations_done"] == 100
    tuned_lr = {p["lr"] for t in results["trials"] if t["arm"] == "tuned" for p in t["points"]}
    assert tuned_lr == {tuning["best"]["params"]["lr"]}
    # The same search, read back from the service's database by Optuna itself.
    optuna_storage = optuna.storages.RDBStorage(service.env["DATABASE_URL"])
    try:
        search = optuna.load_study(study_name=f"clrstudy-{first}/tuned", storage=optuna_storage)
        assert sorted(t.number for t in search.trials) == [0, 1, 2]
        assert search.best_trial.params == tuning["best"]["params"]
    finally:
        optuna_storage.engine.dispose()
    check_report_in_a_browser(service.url, key, first, service.root)

    # 2. Cancel during a long range test.
    long_range = {
        **small_spec("cancel-range", iterations=400),
        "range_test": {"min_lr": 0.001, "max_lr": 0.01, "iterations": 20_000, "eval_every": 100},
    }
    second = api.post("/studies", json=long_range).json()["id"]
    wait_for(lambda: study(second)["phase"] == "range_test", 180, "the range test", service)
    assert api.post(f"/studies/{second}/cancel").status_code == 200
    ended = wait_for(
        lambda: (s := study(second))["status"] != "running" and s, 120, "cancellation", service
    )
    assert ended["status"] == "cancelled"

    # 3. Cancel during the trials of a long study.
    long_spec = {
        **small_spec("cancel-trials", iterations=100_000, range_test=False),
        "eval_every": 100,
    }
    response = api.post("/studies", json=long_spec)
    assert response.status_code == 202, response.text
    third = response.json()["id"]
    wait_for(
        lambda: study(third)["progress"]["iterations_done"] > 0, 180, "trial progress", service
    )
    assert api.post(f"/studies/{third}/cancel").status_code == 200
    ended = wait_for(
        lambda: (s := study(third))["status"] != "running" and s, 120, "cancellation", service
    )
    assert ended["status"] == "cancelled"
    trials = api.get(f"/studies/{third}/trials").json()
    assert {t["state"] for t in trials} <= {"cancelled", "completed"}
    assert any(t["state"] == "cancelled" for t in trials)
    assert api.post(f"/studies/{third}/cancel").status_code == 409

    # The Ray jobs ended and no trial process is left behind.
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(service.dashboard)
    for study_id in (first, second, third):
        job = f"clrstudy-{study_id}"
        wait_for(lambda j=job: jobs.get_job_status(j).is_terminal(), 60, f"job {job}", service)
    wait_for(lambda: not study_processes(third), 60, "trial processes to exit", service)
    api.close()
    service.stop()
    assert not RayCluster(
        Settings(ray_dashboard_port=int(service.env["RAY_DASHBOARD_PORT"]))
    ).reachable()
