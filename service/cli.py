"""The `clrstudy` command line."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.events import (
    BoundsFound,
    EvaluationPoints,
    Event,
    RangeTestPoints,
    ResultSink,
    StudyPlanned,
    TrialEnded,
    TuningEnded,
    TuningStarted,
    TuningTrialEnded,
)


class ProgressDisplay:
    """A sink that shows a study's progress on the terminal, then forwards each event."""

    def __init__(self, inner: ResultSink, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.inner = inner
        self.console = console
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            "{task.fields[info]}",
            console=console,
            transient=False,
        )
        self.tuning_task: Any = None  # added when the study has tuned arms
        self.tuning_best: dict[str, float] = {}
        self.trials_task = self.progress.add_task("trials", total=None, info="")
        self.iterations_task = self.progress.add_task("iterations", total=None, info="")
        self.best: dict[str, float] = {}
        self.done: dict[str, int] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def emit(self, event: Event) -> None:
        with self.lock:
            self._show(event)
        self.inner.emit(event)

    def _show(self, event: Event) -> None:
        if isinstance(event, StudyPlanned):
            total = sum(t.iterations for t in event.trials)
            self.progress.update(self.trials_task, total=len(event.trials), completed=0)
            self.progress.update(self.iterations_task, total=total, completed=0)
            if event.tuning and self.tuning_task is None:
                self.tuning_task = self.progress.add_task(
                    "tuning", total=sum(t.trials for t in event.tuning), info=""
                )
        elif isinstance(event, TuningStarted | TuningTrialEnded | TuningEnded):
            self._show_tuning(event)
        elif isinstance(event, RangeTestPoints) and event.points:
            last = event.points[-1]
            self.progress.update(
                self.trials_task,
                info=f"range test: iteration {last.iteration + 1}, lr {last.lr:.3g}",
            )
        elif isinstance(event, BoundsFound):
            self.console.print(
                f"bounds: base_lr {event.base_lr:.4g}, max_lr {event.max_lr:.4g} "
                f"({event.method}): {event.reason}"
            )
        elif isinstance(event, EvaluationPoints) and event.points:
            arm = event.trial_id.rsplit("-s", 1)[0]
            best = max(p.accuracy for p in event.points)
            self.best[arm] = max(self.best.get(arm, 0.0), best)
            self.done[event.trial_id] = event.points[-1].iteration
            leader = max(self.best, key=lambda a: self.best[a])
            self.progress.update(self.iterations_task, completed=sum(self.done.values()))
            self.progress.update(
                self.trials_task,
                info=f"best so far: {leader} {self.best[leader]:.1%}",
            )
        elif isinstance(event, TrialEnded):
            self.progress.advance(self.trials_task)
            if event.state != "completed":
                note = f": {event.error.splitlines()[0]}" if event.error else ""
                self.console.print(f"trial {event.trial_id} {event.state}{note}")

    def _show_tuning(self, event: TuningStarted | TuningTrialEnded | TuningEnded) -> None:
        if self.tuning_task is None:
            return
        if isinstance(event, TuningStarted):
            again = f", {event.previous} done by an earlier run" if event.previous else ""
            self.progress.advance(self.tuning_task, event.previous)
            self.progress.update(
                self.tuning_task, info=f"searching {', '.join(event.space)} of {event.arm}{again}"
            )
        elif isinstance(event, TuningTrialEnded):
            if event.state in ("completed", "stopped", "diverged", "failed"):
                self.progress.advance(self.tuning_task)
            if event.value is not None and event.state == "completed":
                best = max(self.tuning_best.get(event.arm, 0.0), event.value)
                self.tuning_best[event.arm] = best
            values = ", ".join(f"{k} {v:.4g}" for k, v in event.params.items())
            best_text = (
                f"; best {self.tuning_best[event.arm]:.1%}" if event.arm in self.tuning_best else ""
            )
            self.progress.update(
                self.tuning_task,
                info=f"{event.arm} #{event.number} ({values}) {event.state} at "
                f"{event.iterations_done} iterations{best_text}",
            )
        else:
            values = ", ".join(f"{k} {v:.4g}" for k, v in event.best_params.items())
            self.console.print(
                f"tuned {event.arm}: {values} (trial #{event.best_number}, validation "
                f"accuracy {event.best_value:.1%})"
            )


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from workers.results import ResultsDocument
    from workers.runner import RunOptions, StudyFailed, run_study
    from workers.spec import SpecError, load_spec

    console = Console(stderr=True)
    try:
        spec = load_spec(args.spec)
    except (SpecError, OSError, ValueError) as error:
        console.print(f"[red]invalid study spec {args.spec}:[/red]\n{error}")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = ResultsDocument(spec.model_dump(mode="json"), out / "results.json")
    options = RunOptions(
        storage_path=str(out / "ray"),
        ray_address=args.ray_address,
        data_root=args.data_root,
        experiment=re.sub(r"[^A-Za-z0-9_-]+", "_", spec.name)[:40].strip("_") or "study",
        # The searches of tuned arms: `optuna-dashboard sqlite:///OUT/optuna.db` shows them;
        # running the same command again finishes them rather than starting over.
        tuning_storage=f"sqlite:///{(out / 'optuna.db').resolve()}",
    )
    # Ray's own notices would scroll the progress display away; errors still show.
    logging.getLogger("ray").setLevel(logging.ERROR)
    cancel = threading.Event()
    status, message = "failed", None
    with ProgressDisplay(document, console) as display:
        try:
            outcome = run_study(spec, display, options, cancel=cancel)
            status, message = outcome.status, outcome.error
        except StudyFailed as failure:
            message = str(failure)
        except KeyboardInterrupt:
            cancel.set()
            status, message = "cancelled", "interrupted"
    results = document.finish(status, message)
    _write_reports(results, out)
    console.print(f"study {status}; results and reports in {out}/")
    if message:
        console.print(f"[red]{message}[/red]")
    return 0 if status == "succeeded" else 1


def _write_reports(results: dict[str, Any], out: Path) -> None:
    """report.json and report.html beside results.json."""
    from service.reports import build_report, render_html
    from workers.results import write_json

    report = build_report(results)
    write_json(out / "report.json", report)
    (out / "report.html").write_text(render_html(results, report), encoding="utf-8")
    for line in report["verdicts"]:
        print(line)


def _list(args: argparse.Namespace) -> int:
    from clr.policies import POLICIES
    from workers.datasets import DATASETS
    from workers.models import MODELS
    from workers.optimizers import OPTIMIZERS

    registries: dict[str, Any] = {
        "datasets": DATASETS,
        "models": MODELS,
        "optimizers": OPTIMIZERS,
        "policies": POLICIES,
    }
    for entry in registries[args.what].values():
        described = entry.describe()
        params = ", ".join(
            p["name"] + ("" if p["required"] else f"={p['default']!r}") for p in described["params"]
        )
        print(f"{described['name']:<14} {described['summary']}")
        if params:
            print(f"{'':<14} params: {params}")
    return 0


# --------------------------------------------------------------------------------------
# the service
def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app
    from service.settings import get_settings

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level="info",
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    """`make run`: the service on the embedded default, a first key, the digits demo."""
    import uvicorn

    from api.main import create_app
    from service.db import make_engine, upgrade
    from service.ray_cluster import RayCluster
    from service.settings import get_settings
    from service.store import Store

    settings = get_settings()
    upgrade(settings.database_url)
    _, key = Store(make_engine(settings.database_url)).create_api_key("local", admin=True)
    base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    print(f"API key (admin 'local'), shown once: {key}")
    print("starting the service and a local Ray head (10-30 s)...")
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=settings.host, port=settings.port)
    )
    dashboard = RayCluster(settings).dashboard_url
    watcher = threading.Thread(
        target=_demo_study, args=(base, key, args.spec, dashboard, server), daemon=True
    )
    watcher.start()
    server.run()  # until Ctrl-C; its shutdown stops the dispatcher and the Ray head
    return 0


def _demo_study(base: str, key: str, spec_path: str, dashboard: str, server: Any) -> None:
    import time

    import httpx

    from workers.spec import load_spec

    while not server.started:
        time.sleep(0.5)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30.0) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(1)
        spec = load_spec(spec_path).model_dump(mode="json")
        study = client.post("/api/v1/studies", json=spec).json()
        url = f"{base}/api/v1/studies/{study['id']}"
        print(f"submitted {spec_path}: {url}")
        print(f"its report (log in at {base}/ with the key above): {url}/report.html")
        print(f"Ray dashboard: {dashboard}")
        shown = ""
        while True:
            view = client.get(f"/api/v1/studies/{study['id']}").json()
            progress = view["progress"]
            line = (
                f"{view['status']} ({view['phase']}): {_tuning_progress(progress)}trials "
                f"{progress['trials_done']}/{progress['trials_total']}, iterations "
                f"{progress['iterations_done']}/{progress['iterations_total']}"
            )
            if line != shown:
                print(line)
                shown = line
            if view["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(2)
        for verdict in client.get(f"{url}/report").json().get("verdicts", []):
            print(verdict)
        print(f"report: {url}/report.html; Ctrl-C stops the service and Ray")


def _db(args: argparse.Namespace) -> int:
    from service.db import upgrade
    from service.settings import get_settings

    url = get_settings().database_url
    upgrade(url)
    print(f"database at {_safe_url(url)} is at the latest revision")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _keys_create(args: argparse.Namespace) -> int:
    from service.db import make_engine, upgrade
    from service.settings import get_settings
    from service.store import Store

    url = get_settings().database_url
    upgrade(url)
    record, key = Store(make_engine(url)).create_api_key(args.name, admin=args.admin)
    print(key)
    role = "admin" if record.owner.admin else "owner"
    print(
        f"API key {record.prefix}... for {role} {record.owner.name!r}; shown only once",
        file=sys.stderr,
    )
    return 0


# --------------------------------------------------------------------------------------
# client commands: CLRSTUDY_URL and CLRSTUDY_TOKEN say which server and who
class ClientError(RuntimeError):
    pass


def _client() -> Any:
    import httpx

    url = os.environ.get("CLRSTUDY_URL", "http://127.0.0.1:8000").rstrip("/")
    token = os.environ.get("CLRSTUDY_TOKEN")
    if not token:
        raise ClientError("set CLRSTUDY_TOKEN to an API key (clrstudy keys create NAME)")
    return httpx.Client(
        base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30.0
    )


def _call(method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    try:
        with _client() as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise ClientError(f"cannot reach the clrstudy server: {error}") from error
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if isinstance(detail, list):
            detail = "\n".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail
            )
        raise ClientError(f"{response.status_code}: {detail}")
    return response


def _submit(args: argparse.Namespace) -> int:
    from workers.spec import load_spec

    spec = load_spec(args.spec)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    study = _call("POST", "/studies", json=spec.model_dump(mode="json"), headers=headers).json()
    print(study["id"])
    print(f"submitted {study['name']!r}: {study['status']}", file=sys.stderr)
    return 0


def _tuning_progress(progress: dict[str, Any]) -> str:
    """'tuning trials 3/12, ' for a study with tuned arms, else ''."""
    total = progress.get("tuning_trials_total") or 0
    return f"tuning trials {progress.get('tuning_trials_done', 0)}/{total}, " if total else ""


def _status(args: argparse.Namespace) -> int:
    study = _call("GET", f"/studies/{args.id}").json()
    progress = study.get("progress") or {}
    print(f"{study['name']}: {study['status']} ({study.get('phase')})")
    print(
        f"{_tuning_progress(progress)}"
        f"trials {progress.get('trials_done', 0)}/{progress.get('trials_total', 0)}, "
        f"iterations {progress.get('iterations_done', 0)}/{progress.get('iterations_total', 0)}"
    )
    for arm, accuracy in (progress.get("best_accuracy") or {}).items():
        print(f"  {arm:<24} best accuracy so far {accuracy:.2%}")
    if study.get("error"):
        print(f"error: {study['error']}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    study = _call("POST", f"/studies/{args.id}/cancel").json()
    print(f"{study['id']}: {study['status']}")
    return 0


def _download(path: str, out: str | None) -> int:
    body = _call("GET", path).content
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clrstudy",
        description="Does a cyclical learning rate beat fixed, decaying and adaptive ones?",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a study locally on Ray and write its results")
    run.add_argument("spec", help="study spec, YAML or JSON")
    run.add_argument("--out", required=True, help="folder for results.json and reports")
    run.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster to use (default: $RAY_ADDRESS, else a local Ray)",
    )
    run.add_argument("--data-root", default=None, help="data folder (default: $DATA_ROOT)")
    run.set_defaults(handler=_run)

    listing = commands.add_parser("list", help="list what a spec may name")
    listing.add_argument("what", choices=["datasets", "models", "optimizers", "policies"])
    listing.set_defaults(handler=_list)

    serve = commands.add_parser("serve", help="run the REST service (settings: environment)")
    serve.add_argument("--host", default=None, help="interface (default: $HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default: $PORT)")
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser(
        "demo", help="serve, create a key, submit a study and follow it (make run)"
    )
    demo.add_argument("--spec", default="examples/digits.yaml", help="the study to submit")
    demo.set_defaults(handler=_demo)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply every migration").set_defaults(handler=_db)

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("name", help="the key's owner")
    create.add_argument("--admin", action="store_true", help="may see every owner's studies")
    create.set_defaults(handler=_keys_create)

    submit = commands.add_parser("submit", help="submit a study spec to the server")
    submit.add_argument("spec", help="study spec, YAML or JSON")
    submit.add_argument("--idempotency-key", default=None, help="retry-safe submission key")
    submit.set_defaults(handler=_submit)
    for name, handler, text in (
        ("status", _status, "a study's status and progress"),
        ("cancel", _cancel, "cancel a study"),
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

    from service.schedule_cli import add_schedule_commands

    add_schedule_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from workers.spec import SpecError

    try:
        result: int = args.handler(args)
    except (ClientError, SpecError) as error:
        print(f"clrstudy: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
