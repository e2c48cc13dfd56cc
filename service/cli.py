"""The `clrstudy` command line."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.sink import (
    BoundsFound,
    EvaluationPoints,
    Event,
    RangeTestPoints,
    ResultSink,
    StudyPlanned,
    TrialEnded,
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
    document = ResultsDocument(spec.model_dump(mode="json"), out / "results.json")
    options = RunOptions(
        storage_path=str(out / "ray"),
        ray_address=args.ray_address,
        data_root=args.data_root,
        experiment=spec.name.replace(" ", "_")[:40] or "study",
    )
    cancel = threading.Event()
    status, error = "failed", None
    with ProgressDisplay(document, console) as display:
        try:
            outcome = run_study(spec, display, options, cancel=cancel)
            status, error = outcome.status, outcome.error
        except StudyFailed as failure:
            error = str(failure)
        except KeyboardInterrupt:
            cancel.set()
            status, error = "cancelled", "interrupted"
    document.finish(status, error)
    console.print(f"study {status}; results in {out / 'results.json'}")
    if error:
        console.print(f"[red]{error}[/red]")
    return 0 if status == "succeeded" else 1


def _list(args: argparse.Namespace) -> int:
    from workers.optimizers import OPTIMIZERS

    from clr.policies import POLICIES
    from workers.datasets import DATASETS
    from workers.models import MODELS

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
