"""The service on PostgreSQL against a two-node Ray cluster (scripts/local-cluster): trials run
on both nodes, and a trial whose node is lost mid-study resumes on the head from its
checkpoint, with every point stored once and the study still succeeding.

Both nodes are Ray nodes of this machine, so STORAGE_PATH (a local folder) is storage both
reach, as a shared file system would be across hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from service.db import make_engine, upgrade
from service.ray_cluster import free_port
from service.store import Store
from tests.service.test_execution import Service, wait_for
from workers.trainables import CHECKPOINT_FILE

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "local-cluster"
# Each trial trains ~30 s on one CPU here (about 1,600 iterations/s): long enough for its
# first checkpoint (after the runner's 10 s) to come well before its end.
ITERATIONS = 48_000
EVAL_EVERY = 1_000
CURVE = list(range(0, ITERATIONS + 1, EVAL_EVERY))


class LocalCluster:
    """scripts/local-cluster on free ports, its pids and logs in the test's folder."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.head_port = free_port()
        self.dashboard_port = free_port()
        self.storage_path = root / "ray_results"
        self.state = root / "local-cluster"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "STORAGE_PATH": str(self.storage_path),
            "HEAD_PORT": str(self.head_port),
            "DASHBOARD_PORT": str(self.dashboard_port),
            "LOCAL_CLUSTER_STATE": str(self.state),
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.head_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def run(self, command: str) -> str:
        done = subprocess.run(
            [str(SCRIPT), command], env=self.env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"local-cluster {command}: {done.stderr}\n{self.logs()}"
        return done.stdout

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted(self.state.glob("*.log"))
        )

    def node_ids(self) -> tuple[str, str]:
        """(head, worker): the ids of the head node and of the second node."""
        from ray.util.state import list_nodes

        nodes = list_nodes(address=self.dashboard_url)
        head = [n.node_id for n in nodes if n.is_head_node]
        worker = [n.node_id for n in nodes if "worker" in n.resources_total]
        assert len(head) == 1 and len(worker) == 1, nodes
        return head[0], worker[0]


@pytest.fixture
def cluster(db_url: str, tmp_path: Path) -> Iterator[LocalCluster]:
    upgrade(db_url)
    running = LocalCluster(tmp_path, db_url)
    try:
        running.run("start")
        yield running
    finally:
        running.run("stop")
        # Ray's session folder of this cluster (logs, sockets); its name holds the port.
        shutil.rmtree(f"/tmp/ray-local-cluster-{running.head_port}", ignore_errors=True)


def spec() -> dict[str, Any]:
    return {
        "name": "two-nodes",
        "dataset": "digits",
        "model": "mlp",
        "batch_size": 64,
        "iterations": ITERATIONS,
        "eval_every": EVAL_EVERY,
        "seeds": [0, 1],
        "arms": [{"name": "fixed", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 0.05}}],
        "resources_per_trial": {"cpu": 1},
        "max_failures": 2,
    }


def checkpoint_iteration(trial_folder: Path) -> int | None:
    """The iteration of the trial's newest complete checkpoint; None before the first."""
    for folder in sorted(trial_folder.glob("checkpoint_*"), reverse=True):
        try:
            state = torch.load(folder / CHECKPOINT_FILE, weights_only=False)
        except (OSError, RuntimeError, EOFError):  # not there yet, or still being written
            continue
        return int(state["iteration"])
    return None


def reports(trial_folder: Path) -> list[dict[str, Any]]:
    """The trial's reports as Tune logged them (result.json), in order."""
    lines = (trial_folder / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_trial_of_a_lost_node_resumes_on_the_head_from_its_checkpoint(
    cluster: LocalCluster, db_url: str, tmp_path: Path
) -> None:
    store = Store(make_engine(db_url))
    _, key = store.create_api_key("alice")
    service = Service(tmp_path, db_url)
    service.env["RAY_ADDRESS"] = cluster.address
    service.env["RAY_DASHBOARD_URL"] = cluster.dashboard_url
    head, worker = cluster.node_ids()
    with ExitStack() as stack:
        stack.callback(store.engine.dispose)
        stack.callback(service.stop)
        service.start()
        api = httpx.Client(
            base_url=f"{service.url}/api/v1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        stack.callback(api.close)
        response = api.post("/studies", json=spec())
        assert response.status_code == 202, response.text
        study_id = response.json()["id"]

        def trials() -> dict[str, dict[str, Any]]:
            return {t["trial_id"]: t for t in api.get(f"/studies/{study_id}/trials").json()}

        # 1. One 1-CPU trial on each 1-CPU node.
        placed = wait_for(
            lambda: len(t := trials()) == 2 and all(v["node_id"] for v in t.values()) and t,
            180,
            "both trials to start",
            service,
        )
        assert {t["node_id"] for t in placed.values()} == {head, worker}, placed
        (moved,) = [name for name, t in placed.items() if t["node_id"] == worker]
        folder = cluster.storage_path / f"{study_id}-trials" / moved

        # 2. Once the worker's trial has a checkpoint that the driver has registered (a
        # later point reached the database), its node is lost.
        checkpoint = wait_for(
            lambda: checkpoint_iteration(folder), 120, f"a checkpoint of {moved}", service
        )
        wait_for(
            lambda: trials()[moved]["iterations_done"] > checkpoint,
            60,
            f"{moved} to report past its checkpoint",
            service,
        )
        assert trials()[moved]["state"] == "running", "the trial ended before its node was lost"
        cluster.run("stop-worker")

        # 3. The study still succeeds; the lost trial finished on the head.
        done = wait_for(
            lambda: (
                (s := api.get(f"/studies/{study_id}").json())["status"]
                in ("succeeded", "failed", "cancelled")
                and s
            ),
            240,
            "the study to finish",
            service,
        )
        assert done["status"] == "succeeded", done["error"]
        ended = trials()
        assert {t["state"] for t in ended.values()} == {"completed"}, ended
        assert {t["node_id"] for t in ended.values()} == {head}, ended
        assert {t["iterations_done"] for t in ended.values()} == {ITERATIONS}, ended

        # Every trial's curve is complete: each point once, no gap, the resumed one too.
        results = api.get(f"/studies/{study_id}/results").json()
        curves = {t["trial_id"]: [p["iteration"] for p in t["points"]] for t in results["trials"]}
        assert curves == {name: CURVE for name in placed}

        # It resumed from a checkpoint, not from scratch: its first report on the head
        # came after the checkpoint's iteration.
        runs = reports(folder)
        nodes = [r["node_id"] for r in runs]
        first = nodes.index(head)
        assert set(nodes[:first]) == {worker} and set(nodes[first:]) == {head}, nodes
        assert runs[first]["iterations_done"] > checkpoint, runs[first]
