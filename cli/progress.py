"""The progress display of a study, for `clrstudy run` (from events) and `clrstudy demo`
(from the study as the API shows it).

Both show the same: a line per phase (waiting for Ray, range test, tuning, trials, done)
and the bounds, then bars of trials, iterations and tuning trials with the leading arm's
best accuracy so far. On a terminal the bars redraw in place; piped, rich prints them once
at the end, so the phase lines are what a log shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column

from workers.events import (
    ArmsResolved,
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
from workers.states import COUNTED_TUNING_TRIAL_STATES

# The API's phase names, as a person reads them.
PHASE_WORDS = {
    "queued": "waiting for Ray",
    "range_test": "range test",
    "tuning": "tuning",
    "trials": "trials",
    "report": "report",
    "done": "done",
}


class StudyBars:
    """Phase lines above bars of trials, iterations and tuning trials."""

    def __init__(self, console: Console) -> None:
        self.console = console
        # The bars and counts keep their width; a long note is cut short instead.
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TimeElapsedColumn(table_column=Column(no_wrap=True)),
            TextColumn(
                "{task.fields[info]}",
                table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
            ),
            console=console,
            expand=True,
            transient=False,
        )
        self.trials = self.progress.add_task("trials", total=None, info="")
        self.iterations = self.progress.add_task("iterations", total=None, info="")
        self.tuning: TaskID | None = None  # added when the study has tuned arms
        self.shown: list[str] = []  # the phases shown, in order
        self.started = time.monotonic()

    def __enter__(self) -> StudyBars:
        self.started = time.monotonic()
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def note(self, text: str) -> None:
        """A line above the bars."""
        self.console.print(text, markup=False, highlight=False)

    def phase(self, name: str) -> None:
        """Print `name` with the seconds since the display started, once per change."""
        if not self.shown or name != self.shown[-1]:
            self.shown.append(name)
            self.note(f"{time.monotonic() - self.started:6.0f} s  {name}")

    def plan(self, trials: int, iterations: int, tuning_trials: int = 0) -> None:
        """Set the totals; 0 trials means not planned yet."""
        if trials:
            self.progress.update(self.trials, total=trials)
            self.progress.update(self.iterations, total=iterations)
        if tuning_trials and self.tuning is None:
            self.tuning = self.progress.add_task("tuning", total=tuning_trials, info="")

    def done(
        self, trials: int | None = None, iterations: int | None = None, tuning: int | None = None
    ) -> None:
        """Set how many trials, iterations and tuning trials are done."""
        if trials is not None:
            self.progress.update(self.trials, completed=trials)
        if iterations is not None:
            self.progress.update(self.iterations, completed=iterations)
        if tuning is not None and self.tuning is not None:
            self.progress.update(self.tuning, completed=tuning)

    def best(self, accuracy: Mapping[str, float]) -> None:
        """Show the arm with the best accuracy so far."""
        if accuracy:
            leader = max(accuracy, key=lambda arm: accuracy[arm])
            self.info(f"best so far: {leader} {accuracy[leader]:.1%}")

    def info(self, text: str) -> None:
        self.progress.update(self.trials, info=text)

    def tuning_info(self, text: str) -> None:
        if self.tuning is not None:
            self.progress.update(self.tuning, info=text)

    def bounds(self, base_lr: float, max_lr: float, method: str, reason: str) -> None:
        self.note(f"bounds: base_lr {base_lr:.4g}, max_lr {max_lr:.4g} ({method}): {reason}")


class ProgressDisplay:
    """A sink that shows a local study's progress, then forwards each event to `inner`."""

    def __init__(self, inner: ResultSink, console: Console) -> None:
        self.inner = inner
        self.bars = StudyBars(console)
        self.best: dict[str, float] = {}
        self.iterations_done: dict[str, int] = {}
        self.trials_done = 0
        self.tuning_done = 0
        self.tuning_best: dict[str, float] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> ProgressDisplay:
        self.bars.__enter__()
        self.bars.phase(PHASE_WORDS["queued"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)

    def emit(self, event: Event) -> None:
        with self.lock:
            self._show(event)
        self.inner.emit(event)

    def _show(self, event: Event) -> None:
        bars = self.bars
        if isinstance(event, StudyPlanned):
            total = sum(t.iterations for t in event.trials)
            bars.plan(len(event.trials), total, sum(t.trials for t in event.tuning))
        elif isinstance(event, TuningStarted | TuningTrialEnded | TuningEnded):
            bars.phase(PHASE_WORDS["tuning"])
            self._show_tuning(event)
        elif isinstance(event, RangeTestPoints) and event.points:
            bars.phase(PHASE_WORDS["range_test"])
            last = event.points[-1]
            bars.info(f"range test: iteration {last.iteration + 1}, lr {last.lr:.3g}")
        elif isinstance(event, BoundsFound):
            bars.bounds(event.base_lr, event.max_lr, event.method, event.reason)
        elif isinstance(event, ArmsResolved):  # as the service's driver marks its phase
            bars.phase(PHASE_WORDS["trials"])
        elif isinstance(event, EvaluationPoints) and event.points:
            arm = event.trial_id.rsplit("-s", 1)[0]
            best = max(p.accuracy for p in event.points)
            self.best[arm] = max(self.best.get(arm, 0.0), best)
            self.iterations_done[event.trial_id] = event.points[-1].iteration
            bars.done(iterations=sum(self.iterations_done.values()))
            bars.best(self.best)
        elif isinstance(event, TrialEnded):
            self.trials_done += 1
            bars.done(trials=self.trials_done)
            if event.state != "completed":
                note = f": {event.error.splitlines()[0]}" if event.error else ""
                bars.note(f"trial {event.trial_id} {event.state}{note}")

    def _show_tuning(self, event: TuningStarted | TuningTrialEnded | TuningEnded) -> None:
        bars = self.bars
        if isinstance(event, TuningStarted):
            again = f", {event.previous} done by an earlier run" if event.previous else ""
            self.tuning_done += event.previous
            bars.done(tuning=self.tuning_done)
            bars.tuning_info(f"searching {', '.join(event.space)} of {event.arm}{again}")
        elif isinstance(event, TuningTrialEnded):
            # Interrupted and cancelled trials are replaced, so they do not count.
            if event.state in COUNTED_TUNING_TRIAL_STATES:
                self.tuning_done += 1
                bars.done(tuning=self.tuning_done)
            if event.value is not None and event.state == "completed":
                best = max(self.tuning_best.get(event.arm, 0.0), event.value)
                self.tuning_best[event.arm] = best
            values = ", ".join(f"{k} {v:.4g}" for k, v in event.params.items())
            best_text = (
                f"; best {self.tuning_best[event.arm]:.1%}" if event.arm in self.tuning_best else ""
            )
            bars.tuning_info(
                f"{event.arm} #{event.number} ({values}) {event.state} at "
                f"{event.iterations_done} iterations{best_text}"
            )
        else:
            values = ", ".join(f"{k} {v:.4g}" for k, v in event.best_params.items())
            bars.note(
                f"tuned {event.arm}: {values} (trial #{event.best_number}, validation "
                f"accuracy {event.best_value:.1%})"
            )


def phase_label(view: Mapping[str, Any]) -> str:
    """The phase of a study as `GET /studies/{id}` shows it, in words."""
    if view.get("finished_at"):
        return "done" if view["status"] == "succeeded" else str(view["status"])
    if view["status"] == "queued":
        return PHASE_WORDS["queued"]
    phase = str(view.get("phase") or "queued")
    return PHASE_WORDS.get(phase, phase.replace("_", " "))


class ViewProgress:
    """Shows a study served by the API, one `GET /studies/{id}` view at a time."""

    def __init__(self, console: Console) -> None:
        self.bars = StudyBars(console)
        self.bounds_shown = False

    def __enter__(self) -> ViewProgress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)

    def show(self, view: Mapping[str, Any]) -> None:
        progress = view.get("progress") or {}
        bars = self.bars
        bars.plan(
            progress.get("trials_total", 0),
            progress.get("iterations_total", 0),
            progress.get("tuning_trials_total", 0),
        )
        bars.done(
            progress.get("trials_done"),
            progress.get("iterations_done"),
            progress.get("tuning_trials_done"),
        )
        bars.best(progress.get("best_accuracy") or {})
        label = phase_label(view)
        # A phase shorter than a poll is still named: bounds mean the range test ran, a
        # tuning total that the search began (once the study is past waiting).
        bounds = view.get("bounds")
        if bounds and not self.bounds_shown:
            self.bounds_shown = True
            if PHASE_WORDS["range_test"] not in bars.shown:
                bars.phase(PHASE_WORDS["range_test"])
            bars.bounds(bounds["base_lr"], bounds["max_lr"], bounds["method"], bounds["reason"])
        tuned = progress.get("tuning_trials_total", 0) and progress.get("tuning_trials_done", 0)
        if tuned and PHASE_WORDS["tuning"] not in bars.shown:
            bars.phase(PHASE_WORDS["tuning"])
        bars.phase(label)
