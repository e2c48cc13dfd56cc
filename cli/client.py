"""Client commands over HTTP: `submit`, `status`, `cancel`, `delete`, `results`, `report`.

CLRSTUDY_URL and CLRSTUDY_TOKEN say which server and who. Nothing here imports `service`:
a client needs only the spec reader and HTTP.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
DELETE_WAIT_S = 120.0  # how long `delete` waits for a running study's cancel
DELETE_POLL_S = 2.0


class ClientError(RuntimeError):
    """The server cannot be reached or refused the request; the message says why."""


class Client:
    """The clrstudy REST API at `url` (its root, without /api/v1), as `token`'s owner."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    @classmethod
    def from_env(cls) -> Client:
        token = os.environ.get("CLRSTUDY_TOKEN")
        if not token:
            raise ClientError("set CLRSTUDY_TOKEN to an API key (clrstudy keys create NAME)")
        return cls(os.environ.get("CLRSTUDY_URL") or DEFAULT_URL, token)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """`method path` under /api/v1; an error status becomes a ClientError with its detail."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ClientError(f"cannot reach the clrstudy server at {self.url}: {error}") from error
        if response.status_code >= 400:
            raise ClientError(f"{response.status_code}: {_detail(response)}")
        return response

    def ready(self) -> bool:
        """Whether the server answers /readyz with 200 (database and Ray reachable)."""
        try:
            return self._http.get(f"{self.url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        study: dict[str, Any] = self.call("POST", "/studies", json=spec, headers=headers).json()
        return study

    def study(self, study_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.call("GET", f"/studies/{study_id}").json()
        return view

    def study_url(self, study_id: str) -> str:
        return f"{self.url}/api/v1/studies/{study_id}"


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text
    if isinstance(detail, list):  # FastAPI's validation errors
        return "\n".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail
        )
    return str(detail)


def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the server that CLRSTUDY_URL and CLRSTUDY_TOKEN name."""
    with Client.from_env() as client:
        return client.call(method, path, **kwargs)


def tuning_progress(progress: dict[str, Any]) -> str:
    """'tuning trials 3/12, ' for a study with tuned arms, else ''."""
    total = progress.get("tuning_trials_total") or 0
    return f"tuning trials {progress.get('tuning_trials_done', 0)}/{total}, " if total else ""


# ---- the commands ----------------------------------------------------------------------


def _submit(args: argparse.Namespace) -> int:
    from workers.spec import load_spec

    spec = load_spec(args.spec).model_dump(mode="json")
    with Client.from_env() as client:
        study = client.submit(spec, args.idempotency_key)
    print(study["id"])
    print(f"submitted {study['name']!r}: {study['status']}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    study = call("GET", f"/studies/{args.id}").json()
    progress = study.get("progress") or {}
    print(f"{study['name']}: {study['status']} ({study.get('phase')})")
    print(
        f"{tuning_progress(progress)}"
        f"trials {progress.get('trials_done', 0)}/{progress.get('trials_total', 0)}, "
        f"iterations {progress.get('iterations_done', 0)}/{progress.get('iterations_total', 0)}"
    )
    for arm, accuracy in (progress.get("best_accuracy") or {}).items():
        print(f"  {arm:<24} best accuracy so far {accuracy:.2%}")
    if study.get("error"):
        print(f"error: {study['error']}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    study = call("POST", f"/studies/{args.id}/cancel").json()
    print(f"{study['id']}: {study['status']}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    """Delete a study; a running one is cancelled first, and deleted once it has ended."""
    deadline = time.monotonic() + DELETE_WAIT_S
    with Client.from_env() as client:
        while True:
            try:
                client.call("DELETE", f"/studies/{args.id}")
                break
            except ClientError as error:
                if not str(error).startswith("409") or time.monotonic() > deadline:
                    raise
            print("cancelling the running study before deleting it ...", file=sys.stderr)
            time.sleep(DELETE_POLL_S)
    print(f"{args.id}: deleted")
    return 0


def _download(path: str, out: str | None) -> int:
    body = call("GET", path).content
    if out:
        Path(out).write_bytes(body)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(body.decode())
    return 0


def _results(args: argparse.Namespace) -> int:
    return _download(f"/studies/{args.id}/results", args.output)


def _report(args: argparse.Namespace) -> int:
    suffix = {"json": "", "html": ".html", "csv": ".csv"}[args.format]
    return _download(f"/studies/{args.id}/report{suffix}", args.output)


def add_client_commands(commands: Any) -> None:
    """Add `submit`, `status`, `cancel`, `delete`, `results` and `report` to the subparsers."""
    submit = commands.add_parser("submit", help="submit a study spec to the server")
    submit.add_argument("spec", help="study spec, YAML or JSON")
    submit.add_argument("--idempotency-key", default=None, help="retry-safe submission key")
    submit.set_defaults(handler=_submit)
    for name, handler, text in (
        ("status", _status, "a study's status and progress"),
        ("cancel", _cancel, "cancel a study"),
        ("delete", _delete, "delete a study, its results and files (cancelled first)"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("id", help="study id")
        command.set_defaults(handler=handler)
    results = commands.add_parser("results", help="a study's results document (JSON)")
    results.add_argument("id", help="study id")
    results.add_argument("-o", "--output", default=None, help="file (default: stdout)")
    results.set_defaults(handler=_results)
    report = commands.add_parser("report", help="a study's comparison report")
    report.add_argument("id", help="study id")
    report.add_argument("--format", choices=["html", "json", "csv"], default="html")
    report.add_argument("-o", "--output", default=None, help="file (default: stdout)")
    report.set_defaults(handler=_report)
