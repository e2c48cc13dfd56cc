"""The progress display, fed events (clrstudy run) or API views (clrstudy demo), as a pipe
sees it: phase lines in order, the bounds, the bars once at the end."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from cli.progress import ProgressDisplay, ViewProgress, phase_label
from tests.api.conftest import PLANNED, run_events
from workers.events import Event


def piped() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=100), out  # a file: not a terminal


def view(status: str, phase: str, **progress: Any) -> dict[str, Any]:
    return {
        "status": status,
        "phase": phase,
        "finished_at": "2026-01-01T00:00:00" if status in ("succeeded", "failed") else None,
        "bounds": progress.pop("bounds", None),
        "progress": {
            "trials_done": 0,
            "trials_total": 0,
            "iterations_done": 0,
            "iterations_total": 0,
            "best_accuracy": {},
            "tuning_trials_done": 0,
            "tuning_trials_total": 0,
            **progress,
        },
    }


@pytest.mark.parametrize(
    ("status", "phase", "label"),
    [
        ("queued", "queued", "waiting for Ray"),
        ("running", "queued", "waiting for Ray"),
        ("running", "range_test", "range test"),
        ("running", "tuning", "tuning"),
        ("running", "trials", "trials"),
        ("running", "report", "report"),
        ("succeeded", "done", "done"),
        ("failed", "trials", "failed"),
    ],
)
def test_phase_label(status: str, phase: str, label: str) -> None:
    assert phase_label(view(status, phase)) == label


def test_a_followed_study_prints_each_phase_once_and_the_bars_at_the_end() -> None:
    console, out = piped()
    bounds = {"base_lr": 0.03, "max_lr": 0.1, "method": "accuracy", "reason": "it rose"}
    views = [view("queued", "queued")] * 50 + [view("running", "queued")] * 50
    # The range test ended between two looks: its bounds say it ran.
    views += [
        view(
            "running",
            "trials",
            bounds=bounds,
            trials_total=4,
            iterations_total=240,
            trials_done=k // 100,
            iterations_done=k * 240 // 400,
            best_accuracy={"fixed": 0.5, "triangular": 0.6 + k / 2000},
        )
        for k in range(400)
    ]
    views.append(
        view(
            "succeeded",
            "done",
            bounds=bounds,
            trials_total=4,
            iterations_total=240,
            trials_done=4,
            iterations_done=240,
            best_accuracy={"fixed": 0.7, "triangular": 0.95},
        )
    )
    with ViewProgress(console) as progress:
        for v in views:
            progress.show(v)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    assert [line.split("s  ", 1)[1] for line in lines[:2]] == ["waiting for Ray", "range test"]
    assert lines[2] == "bounds: base_lr 0.03, max_lr 0.1 (accuracy): it rose"
    assert [line.split("s  ", 1)[1] for line in lines[3:5]] == ["trials", "done"]
    assert lines[5].split()[:1] + lines[5].split()[2:3] == ["trials", "4/4"]
    assert "best so far: triangular 95.0%" in lines[5]
    assert lines[6].split()[2] == "240/240"
    assert len(lines) == 7


def test_a_tuning_search_shorter_than_a_look_is_still_named() -> None:
    console, out = piped()
    with ViewProgress(console) as progress:
        progress.show(view("running", "queued", tuning_trials_total=4))
        progress.show(view("running", "trials", tuning_trials_total=4, tuning_trials_done=4))
    phases = [line.split("s  ", 1)[1].rstrip() for line in out.getvalue().splitlines()[:3]]
    assert phases == ["waiting for Ray", "tuning", "trials"]


class Collect:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def test_a_local_run_shows_phases_bounds_and_the_leader_and_forwards_every_event() -> None:
    console, out = piped()
    inner = Collect()
    events = run_events(PLANNED)
    with ProgressDisplay(inner, console) as display:
        for event in events:
            display.emit(event)
    assert inner.events == events
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    phases = [line.split("s  ", 1)[1] for line in lines if " s  " in line]
    assert phases == ["waiting for Ray", "range test", "trials"]
    assert "bounds: base_lr 0.03, max_lr 0.1 (accuracy): accuracy rises" in out.getvalue()
    trials = next(line for line in lines if line.startswith("trials "))
    assert "4/4" in trials and "best so far: triangular 95.0%" in trials
    assert any(line.startswith("iterations ") and "240/240" in line for line in lines)
