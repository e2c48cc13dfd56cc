"""ResultsDocument folds a tuned arm's search into results.json's "tuning" section."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from workers.events import (
    ArmsResolved,
    PlannedTrial,
    PlannedTuning,
    StudyPlanned,
    TuningEnded,
    TuningStarted,
    TuningTrialEnded,
)
from workers.results import ResultsDocument

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
