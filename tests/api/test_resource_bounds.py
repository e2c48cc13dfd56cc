"""Every spec field that costs the cluster something is bounded at submission, with a 422."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

STUDIES = "/api/v1/studies"
Headers = dict[str, str]

# Each of these was accepted, and could stall a slot forever or crash the Ray head.
OVER_THE_LIMITS: list[tuple[dict[str, Any], list[str], list[str]]] = [
    (
        {"resources_per_trial": {"cpu": 100000}},
        ["body", "resources_per_trial"],
        ["cpu is 100000, above the limit of", "per trial (MAX_CPUS_PER_TRIAL)"],
    ),
    (
        {"resources_per_trial": {"gpu": 9}},
        ["body", "resources_per_trial"],
        ["gpu is 9, above the limit of 8 per trial (MAX_GPUS_PER_TRIAL)"],
    ),
    (
        {"max_failures": 1_000_000_000},
        ["body", "max_failures"],
        ["is 1000000000, above the limit of 5 (MAX_FAILURES)"],
    ),
    (
        {"dataset": {"name": "synthetic", "train_size": 10**12}},
        ["body"],
        ["train_size + test_size is 1000000004000", "limit of 1000000 samples"],
    ),
    (
        {"dataset": {"name": "synthetic", "image_size": 10**6}},
        ["body", "dataset"],
        ["image_size is 1000000, above the limit of 64"],
    ),
    (
        {"model": {"name": "mlp", "hidden": "1000000,1000000"}},
        ["body"],
        ["mlp has 1000076000010 parameters", "limit of 50000000 (MAX_MODEL_PARAMETERS)"],
    ),
    (
        {"model": {"name": "small_cnn", "width": 10**6}},
        ["body"],
        ["small_cnn has", "limit of 50000000 (MAX_MODEL_PARAMETERS)"],
    ),
    # Widths that overflowed the size arithmetic of a layer (a 500 before).
    (
        {"model": {"name": "small_cnn", "width": 10**18}},
        ["body", "model"],
        ["width is 1000000000000000000, above the limit of 1000000"],
    ),
    (
        {"model": {"name": "mlp", "hidden": "99999999999999999999,5"}},
        ["body"],
        ["a layer of 99999999999999999999 units, above the limit of 1000000"],
    ),
    (
        {"timeout_s": 10**9},
        ["body", "timeout_s"],
        ["is 1e+09, above the limit of 86400 s (MAX_STUDY_SECONDS)"],
    ),
]


def test_specs_over_the_resource_limits_are_422_naming_field_value_and_limit(
    client: TestClient, alice: Headers, spec: Callable[..., dict[str, Any]]
) -> None:
    for changes, loc, words in OVER_THE_LIMITS:
        response = client.post(STUDIES, json=spec(**changes), headers=alice)
        assert response.status_code == 422, changes
        error = next(e for e in response.json()["detail"] if e["loc"] == loc)
        for word in words:
            assert word in error["msg"], (changes, error)
    assert client.get(STUDIES, headers=alice).json()["total"] == 0
    within = spec(timeout_s=3600, max_failures=5, model={"name": "small_cnn", "width": 32})
    assert client.post(STUDIES, json=within, headers=alice).status_code == 202


def test_every_number_of_a_spec_has_an_upper_bound(
    client: TestClient, alice: Headers, spec: Callable[..., dict[str, Any]]
) -> None:
    huge = 10**15
    tuned = {
        "name": "tuned",
        "optimizer": "sgd",
        "policy": "fixed",
        "tuning": {"trials": 2, "space": {"lr": {"low": 0.001, "high": 1.0}}},
    }
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"epochs": huge, "iterations": None}, ["body", "epochs"]),
        ({"eval_every": huge}, ["body", "eval_every"]),
        ({"batch_size": huge}, ["body", "batch_size"]),
        ({"range_test": {"min_lr": 0.001, "max_lr": huge}}, ["body", "range_test", "max_lr"]),
        ({"range_test": {"epochs": huge}}, ["body", "range_test", "epochs"]),
        ({"range_test": {"eval_every": huge}}, ["body", "range_test", "eval_every"]),
        ({"range_test": {"stop_factor": huge}}, ["body", "range_test", "stop_factor"]),
    ]
    for key, value in (("grace_period", huge), ("reduction_factor", huge), ("seed", huge)):
        arm = {**tuned, "tuning": {**tuned["tuning"], key: value}}
        cases.append(({"arms": [arm]}, ["body", "arms", 0, "tuning", key]))
    arm = {**tuned, "tuning": {**tuned["tuning"], "space": {"lr": {"low": 0.1, "high": huge}}}}
    cases.append(({"arms": [arm]}, ["body", "arms", 0, "tuning", "space", "lr", "high"]))
    for changes, loc in cases:
        response = client.post(STUDIES, json=spec(**changes), headers=alice)
        assert response.status_code == 422, changes
        locs = [e["loc"] for e in response.json()["detail"]]
        assert loc in locs, (changes, locs)
