"""The tidy CSV of a study: one row per trial evaluation point."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

CSV_COLUMNS = (
    "study",
    "arm",
    "seed",
    "trial_id",
    "state",
    "iteration",
    "epoch",
    "lr",
    "train_loss",
    "accuracy",
    "loss",
    "elapsed_s",
    "d",  # the optimizer's estimated step size; empty for most optimizers
)
_POINT_COLUMNS = CSV_COLUMNS[5:]


def render_csv(results: Mapping[str, Any]) -> str:
    """Every evaluation point of every trial, with its study, arm, seed and trial state.

    `study` is the study id, or the spec's name for a study run without the service.
    """
    study = results.get("study_id") or (results.get("spec") or {}).get("name")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for trial in results.get("trials") or ():
        head = (
            study,
            trial.get("arm"),
            trial.get("seed"),
            trial.get("trial_id"),
            trial.get("state"),
        )
        writer.writerows(
            head + tuple(point.get(c) for c in _POINT_COLUMNS)
            for point in trial.get("points") or ()
        )
    return out.getvalue()
