"""Local commands: `run` (a study on Ray, results in a folder) and `list` (the registries)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.spec import StudySpec

# --smoke-test: the same study, every code path (range test, tuning, every arm), in seconds.
SMOKE_ITERATIONS = 24  # the study's budget per trial; arms with their own scale with it
SMOKE_EVALUATIONS = 3  # evaluations per trial, at least (eval_every shrinks to match)
SMOKE_SEEDS = 1  # the first seed only
SMOKE_RANGE_TEST = 60  # iterations of the range test; enough points for the bound rules
SMOKE_RANGE_TEST_EVAL_EVERY = 4
SMOKE_TUNING_TRIALS = 2  # per tuned arm (more when its start_with asks for more)
SMOKE_BATCH_SIZE = 32  # the most examples per iteration
SMOKE_DATA_SIZE = {"train_size": 512, "test_size": 256}  # caps of data sets that take them


def smoke(spec: StudySpec) -> StudySpec:
    """`spec` shrunk to run in seconds on CPUs, keeping its arms, range test and tuning.

    Budgets shrink in proportion (an arm with a shorter budget than the study keeps a
    shorter one), seeds to the first two, tuning to two trials, batches to 32 and data sets
    that take a size to a small one; trials use one CPU and no GPU.
    """
    from workers.spec import parse_spec

    data = spec.model_dump(mode="json")
    scale = SMOKE_ITERATIONS / spec.iterations if spec.iterations else None
    data.update(
        iterations=SMOKE_ITERATIONS,
        epochs=None,
        eval_every=min(spec.eval_every, SMOKE_ITERATIONS // SMOKE_EVALUATIONS),
        seeds=spec.seeds[:SMOKE_SEEDS],
        batch_size=min(spec.batch_size, SMOKE_BATCH_SIZE),
        resources_per_trial={"cpu": 1, "gpu": 0},
    )
    options = data["dataset"]["options"]
    for key, cap in SMOKE_DATA_SIZE.items():
        if _takes(spec.dataset.name, key):
            options[key] = min(options.get(key, cap), cap)
    if data["range_test"] is not None:
        data["range_test"].update(
            iterations=SMOKE_RANGE_TEST, epochs=None, eval_every=SMOKE_RANGE_TEST_EVAL_EVERY
        )
    for arm in data["arms"]:
        if arm["iterations"] is not None:
            shrunk = round(arm["iterations"] * scale) if scale else SMOKE_ITERATIONS
            arm["iterations"] = max(1, min(shrunk, SMOKE_ITERATIONS))
        params = arm["policy"]["params"]
        if isinstance(params.get("warmup"), int) and not isinstance(params["warmup"], bool):
            # A warm-up in iterations shrinks with the budget it must fit in (wsd).
            params["warmup"] = round(params["warmup"] * scale) if scale else 0
        tuning = arm["tuning"]
        if tuning is not None:
            tuning.update(
                trials=min(tuning["trials"], max(SMOKE_TUNING_TRIALS, len(tuning["start_with"]))),
                max_iterations=None,  # the arm's budget
                grace_period=None,  # the default, from the budget
            )
    return parse_spec(data, source=f"{spec.name} (--smoke-test)")


def _takes(dataset: str, option: str) -> bool:
    from workers.datasets import DATASETS

    return any(p.name == option for p in DATASETS[dataset].params)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cli.progress import ProgressDisplay
    from workers.results import ResultsDocument
    from workers.runner import RunOptions, StudyFailed, run_study
    from workers.spec import SpecError, load_spec

    console = Console(stderr=True)
    try:
        spec = load_spec(args.spec)
        if args.smoke_test:
            spec = smoke(spec)
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
        display.bars.phase("done" if status == "succeeded" else status)
    results = document.finish(status, message)
    _write_reports(results, out)
    console.print(f"study {status}; results and reports in {out}/")
    if message:
        console.print(f"[red]{message}[/red]")
    return 0 if status == "succeeded" else 1


def _write_reports(results: dict[str, Any], out: Path) -> None:
    """report.json and report.html beside results.json; the verdicts on stdout."""
    from service.reports import build_report, render_html
    from workers.results import write_json

    report = build_report(results)
    write_json(out / "report.json", report)
    (out / "report.html").write_text(render_html(results, report), encoding="utf-8")
    for line in report["verdicts"]:
        print(line)


# An optimizer's stepping rules, as its catalog entry names them.
TRAITS = ("schedule_free", "parameter_free", "averaged")


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
    registry = registries[args.what]
    width = max(14, *(len(name) for name in registry))
    for entry in registry.values():
        described = entry.describe()
        params = ", ".join(
            p["name"] + ("" if p["required"] else f"={p['default']!r}") for p in described["params"]
        )
        print(f"{described['name']:<{width}} {described['summary']}")
        if params:
            print(f"{'':<{width}} params: {params}")
        traits = [name.replace("_", "-") for name in TRAITS if described.get(name)]
        if "batchable" in described and not described["batchable"]:
            traits.append("not batchable")
        if traits:
            print(f"{'':<{width}} stepping: {', '.join(traits)}")
    return 0


def add_local_commands(commands: Any) -> None:
    """Add `run` and `list` to the `clrstudy` parser's subparsers."""
    run = commands.add_parser("run", help="run a study locally on Ray and write its results")
    run.add_argument("spec", help="study spec, YAML or JSON")
    run.add_argument("--out", required=True, help="folder for results.json and reports")
    run.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster to use (default: $RAY_ADDRESS, else a local Ray)",
    )
    run.add_argument("--data-root", default=None, help="data folder (default: $DATA_ROOT)")
    run.add_argument(
        "--smoke-test",
        action="store_true",
        help="a tiny version of the study (every arm, range test and tuning; few iterations, "
        "seeds and tuning trials; CPU only) to check that it runs",
    )
    run.set_defaults(handler=_run)

    listing = commands.add_parser("list", help="list what a spec may name")
    listing.add_argument("what", choices=["datasets", "models", "optimizers", "policies"])
    listing.set_defaults(handler=_list)
