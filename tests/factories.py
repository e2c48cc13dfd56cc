"""Test data that several test modules share: study specs, and results documents.

Every factory returns a fresh, deep copy: a test may change what it gets.
"""

from __future__ import annotations

import copy
from typing import Any

# A small valid study: digits, two arms (one taking its bounds from the range test), 2 seeds.
SPEC: dict[str, Any] = {
    "name": "digits: triangular vs fixed",
    "dataset": "digits",
    "model": {"name": "mlp", "hidden": "32"},
    "batch_size": 64,
    "iterations": 60,
    "eval_every": 10,
    "seeds": 2,
    "range_test": {"min_lr": 0.001, "max_lr": 2.0, "iterations": 100, "ramp": "linear"},
    "arms": [
        {"name": "fixed", "optimizer": "sgd", "policy": {"name": "fixed", "lr": "auto"}},
        {
            "name": "triangular",
            "optimizer": "sgd",
            "policy": {"name": "triangular", "base_lr": "auto", "max_lr": "auto", "step_size": 20},
        },
    ],
}

# A study with a given-LR arm and a tuned fixed-LR arm (an Optuna search of 4 trials).
TUNED_SPEC: dict[str, Any] = {
    "name": "tuned",
    "dataset": "digits",
    "model": "mlp",
    "batch_size": 64,
    "iterations": 200,
    "seeds": [0],
    "arms": [
        {"name": "plain", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 0.1}},
        {
            "name": "tuned",
            "optimizer": "sgd",
            "policy": {"name": "fixed", "lr": "tuned"},
            "tuning": {"trials": 4, "space": {"lr": {"low": 0.001, "high": 1.0}}},
        },
    ],
}


def study_spec(**changes: Any) -> dict[str, Any]:
    """SPEC with some top-level fields replaced."""
    return {**copy.deepcopy(SPEC), **copy.deepcopy(changes)}


def tuned_spec(**changes: Any) -> dict[str, Any]:
    """TUNED_SPEC with some top-level fields replaced."""
    return {**copy.deepcopy(TUNED_SPEC), **copy.deepcopy(changes)}
