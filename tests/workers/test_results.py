"""The results document: its one builder, and ResultsDocument folding events into it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from workers.events import (
    ArmsResolved,
    EvalPoint,
    EvaluationPoints,
    PlannedTrial,
    PlannedTuning,
    RangeTestPoint,
    RangeTestPoints,
    StudyPlanned,
    TrialEnded,
    TrialStarted,
    TuningEnded,
    TuningStarted,
    TuningTrialEnded,
)
from workers.results import RangeTestEntry, ResultsDocument, TrialEntry, finite, results_document

SPEC: dict[str, Any] = {"name": "digits", "arms": [{"name": "fixed-tuned"}], "seeds": [0]}
SPACE = {"lr": {"type": "float", "low": 0.0001, "high": 1.0, "log": True}}


def ended(number: int, **changes: Any) -> TuningTrialEnded:
    values: dict[str, Any] = {
        "arm": "fixed-tuned",
        "number": number,
        "params": {"lr": 0.01 * (number + 1)},
        "state": "completed",
        "iterations_done": 40,
        "value": 0.5 + number / 100,
        "wall_s": 1.5,
        "node_id": "node-a",
    }
    return TuningTrialEnded(**{**values, **changes})


def written(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def test_a_search_is_written_to_the_file_as_it_goes(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    # Points would wait an hour: the tuning events must not.
    document = ResultsDocument(SPEC, path, write_every_s=3600)
    assert document.doc["tuning"] == {}
    plan = StudyPlanned(21, (PlannedTrial("fixed-tuned-s0", "fixed-tuned", 0, 60),),
                        (PlannedTuning("fixed-tuned", 3, 40),))  # fmt: skip
    document.emit(plan)
    assert written(path)["tuning"] == {
        "fixed-tuned": {"optuna_study": None, "trials_planned": 3, "max_iterations": 40,
                        "space": {}, "trials": [], "best": None},
    }  # fmt: skip

    document.emit(TuningStarted("fixed-tuned", "clrstudy-x/fixed-tuned", 3, 40, SPACE))
    tuning = written(path)["tuning"]["fixed-tuned"]
    assert (tuning["optuna_study"], tuning["space"]) == ("clrstudy-x/fixed-tuned", SPACE)

    document.emit(ended(2))
    document.emit(ended(0, state="diverged", iterations_done=7, value=0.0, error="loss is nan"))
    trials = written(path)["tuning"]["fixed-tuned"]["trials"]
    assert [(t["number"], t["state"]) for t in trials] == [(0, "diverged"), (2, "completed")]
    assert trials[0] == {
        "number": 0, "params": {"lr": 0.01}, "state": "diverged", "iterations_done": 7,
        "value": 0.0, "wall_s": 1.5, "error": "loss is nan", "node_id": "node-a",
    }  # fmt: skip

    document.emit(ended(1, state="stopped", iterations_done=10, value=math.nan))
    assert written(path)["tuning"]["fixed-tuned"]["trials"][1]["value"] is None  # no NaN in JSON
    document.emit(TuningEnded("fixed-tuned", 2, {"lr": 0.03}, 0.52))
    assert written(path)["tuning"]["fixed-tuned"]["best"] == {
        "number": 2,
        "params": {"lr": 0.03},
        "value": 0.52,
    }
    arms = {"fixed-tuned": {"policy": {"name": "fixed", "params": {"lr": 0.03}}, "tuned": ["lr"]}}
    document.emit(ArmsResolved(arms))
    assert document.finish("succeeded")["arms"]["fixed-tuned"]["tuned"] == ["lr"]
    assert [t["number"] for t in written(path)["tuning"]["fixed-tuned"]["trials"]] == [0, 1, 2]


def test_a_trial_told_twice_is_listed_once() -> None:
    document = ResultsDocument(SPEC)
    document.emit(TuningStarted("fixed-tuned", "s/fixed-tuned", 4, 40, SPACE))
    document.emit(ended(3))
    document.emit(ended(1))
    document.emit(ended(3, state="stopped", iterations_done=20, node_id=None))  # a replay
    document.emit(ended(0, arm="other"))  # another arm's search, never announced
    trials = document.doc["tuning"]["fixed-tuned"]["trials"]
    assert [(t["number"], t["state"]) for t in trials] == [(1, "completed"), (3, "stopped")]
    assert trials[1]["node_id"] == "node-a"  # a replay does not know the node
    other = document.doc["tuning"]["other"]
    assert (other["optuna_study"], other["trials_planned"], len(other["trials"])) == (None, None, 1)


def eval_point(iteration: int, accuracy: float = 0.5) -> EvalPoint:
    train_loss = None if iteration == 0 else 1.0
    return EvalPoint(iteration, iteration / 20, 0.05, train_loss, accuracy, 0.9, iteration / 100)


def test_the_one_builder_gives_every_documented_key() -> None:
    spec = {**SPEC, "range_test": {"min_lr": 0.001, "max_lr": 2.0, "ramp": "linear"}}
    document = results_document(
        spec,
        study_id="s1",
        status="succeeded",
        error=None,
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:01:00+00:00",
        wall_s=60.0,
        iterations_per_epoch=21,
        range_test=RangeTestEntry([{"iteration": 0}], 1, "completed", "node-a"),
        bounds=None,
        arms={},
        tuning={},
        trials=[TrialEntry("a-s0", "a", 0, iterations=60, points=[{"iteration": 0}])],
    )
    assert list(document) == [
        "format", "study_id", "status", "error", "spec", "started_at", "finished_at", "wall_s",
        "iterations_per_epoch", "range_test", "bounds", "arms", "tuning", "trials",
    ]  # fmt: skip
    assert document["format"] == 1
    # The sweep's settings are the spec's.
    assert document["range_test"] == {
        "points": [{"iteration": 0}], "stopped_at": 1, "stop_reason": "completed",
        "min_lr": 0.001, "max_lr": 2.0, "ramp": "linear", "node_id": "node-a",
    }  # fmt: skip
    assert document["trials"] == [
        {"trial_id": "a-s0", "arm": "a", "seed": 0, "state": "pending", "error": None,
         "node_id": None, "iterations": 60, "iterations_done": 0, "wall_s": None,
         "points": [{"iteration": 0}]},
    ]  # fmt: skip


def test_a_range_test_that_reported_nothing_has_no_section() -> None:
    assert ResultsDocument(SPEC).doc["range_test"] is None
    document = ResultsDocument(SPEC)
    document.emit(RangeTestPoints((RangeTestPoint(0, 0.001, 2.3, 2.3, 0.1, 2.3),)))
    document.emit(RangeTestPoints((RangeTestPoint(1, 0.002, math.inf, math.inf),)))
    section = document.doc["range_test"]
    assert [p["iteration"] for p in section["points"]] == [0, 1]
    assert section["points"][1]["loss"] is None  # no infinity in JSON
    assert section["stop_reason"] is None


def test_a_resumed_trial_keeps_each_point_once_and_unfinished_trials_end_cancelled() -> None:
    document = ResultsDocument(SPEC)
    trials = (PlannedTrial("a-s0", "a", 0, 40), PlannedTrial("a-s1", "a", 1, 40))
    document.emit(StudyPlanned(21, trials))
    document.emit(TrialStarted("a-s0", "a", 0, 40, "node-a"))
    document.emit(EvaluationPoints("a-s0", (eval_point(0), eval_point(20))))
    # The trial's process died; it resumed on another node and reports iteration 20 again.
    document.emit(TrialStarted("a-s0", "a", 0, 40, "node-b"))
    document.emit(EvaluationPoints("a-s0", (eval_point(20), eval_point(40, 0.8))))
    document.emit(TrialEnded("a-s0", "completed", 40, 0.5, node_id="node-b"))
    doc = document.finish("cancelled")
    first, second = doc["trials"]
    assert [p["iteration"] for p in first["points"]] == [0, 20, 40]
    assert (first["state"], first["node_id"]) == ("completed", "node-b")
    assert first["iterations_done"] == 40
    assert first["wall_s"] == 0.5  # a completed trial's own time, not its last point's
    assert (second["state"], second["iterations_done"], second["points"]) == ("cancelled", 0, [])
    assert doc["status"] == "cancelled" and doc["wall_s"] is not None
    failed = ResultsDocument(SPEC)
    failed.emit(StudyPlanned(21, trials))
    assert {t["state"] for t in failed.finish("failed", "boom")["trials"]} == {"failed"}


def test_finite_keeps_finite_numbers_only() -> None:
    values = (3, 0.5, math.nan, math.inf, -math.inf)
    assert [finite(v) for v in values] == [3.0, 0.5, None, None, None]
    assert [finite(v) for v in (None, True, "0.5")] == [None, None, None]
    assert isinstance(finite(3), float)
