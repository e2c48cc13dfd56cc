"""The digits demo end to end through the service, and the API's latency meanwhile.

Starts `clrstudy serve` on a fresh SQLite database with its own local Ray head, submits
`examples/digits.yaml`, and while the study trains sends `GET /api/v1/studies/{id}` at a
fixed rate (default 10 requests/s for 30 s). Prints the latency percentiles against an
idle reference (`GET /healthz` before the study starts, same rate and duration), and the
study's time from submission to `succeeded`.

    .venv/bin/python bench/service_latency.py [--rate 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from service.db import make_engine, upgrade
from service.ray_cluster import free_port
from service.store import Store
from workers.spec import load_spec


def load(client: httpx.Client, path: str, rate: float, seconds: float) -> list[float]:
    """Latencies (ms) of GETs sent at a fixed rate: one every 1/rate s, none skipped."""
    latencies = []
    interval = 1.0 / rate
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent = time.perf_counter()
        client.get(path).raise_for_status()
        latencies.append((time.perf_counter() - sent) * 1000)
    return latencies


def summary(latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100)
    top = max(latencies)
    return f"p50 {q[49]:6.1f} ms  p95 {q[94]:6.1f} ms  p99 {q[98]:6.1f} ms  max {top:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--spec", default="examples/digits.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        url = f"sqlite:///{Path(root) / 'bench.db'}"
        upgrade(url)
        _, key = Store(make_engine(url)).create_api_key("bench")
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "PORT": str(port),
            "RAY_HEAD_PORT": str(free_port()),
            "RAY_DASHBOARD_PORT": str(free_port()),
            "STORAGE_PATH": str(Path(root) / "ray_results"),
        }
        env.pop("RAY_ADDRESS", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as client:
                while True:
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.5)
                idle = load(client, "/healthz", args.rate, args.seconds)
                spec = load_spec(args.spec).model_dump(mode="json")
                submitted = time.perf_counter()
                study = client.post("/api/v1/studies", json=spec).json()
                path = f"/api/v1/studies/{study['id']}"
                busy = load(client, path, args.rate, args.seconds)
                while client.get(path).json()["status"] not in ("succeeded", "failed", "cancelled"):
                    time.sleep(1)
                total = time.perf_counter() - submitted
                status = client.get(path).json()["status"]
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=120)
    print(f"{args.rate:g} requests/s for {args.seconds:g} s each")
    print(f"GET /healthz, idle service:           {summary(idle)}")
    print(f"GET /api/v1/studies/{{id}}, training:  {summary(busy)}")
    ratio = statistics.median(busy) / statistics.median(idle)
    print(f"p50 ratio (training / idle healthz): {ratio:.1f}x")
    print(f"{args.spec}: {status} {total:.0f} s after submission (Ray head already up)")


if __name__ == "__main__":
    main()
