"""The catalog, the health checks and the OpenAPI document."""

from __future__ import annotations

from typing import Any, get_args

from fastapi.testclient import TestClient

from api.schemas import StudyPhase, StudyStatus, TrialState
from clr.policies import POLICIES
from service.models import STUDY_PHASES, STUDY_STATUSES, TRIAL_STATES
from workers.datasets import DATASETS
from workers.models import MODELS
from workers.optimizers import OPTIMIZERS
from workers.spec import StudySpec

Headers = dict[str, str]


def test_the_catalog_lists_every_registry_with_its_params(
    client: TestClient, alice: Headers
) -> None:
    catalog = client.get("/api/v1/catalog", headers=alice).json()
    for kind, registry in (
        ("datasets", DATASETS),
        ("models", MODELS),
        ("optimizers", OPTIMIZERS),
        ("policies", POLICIES),
    ):
        assert [entry["name"] for entry in catalog[kind]] == list(registry)
    triangular = next(p for p in catalog["policies"] if p["name"] == "triangular")
    params = {p["name"]: p for p in triangular["params"]}
    assert params["base_lr"]["auto"] is True and params["step_size"]["auto"] is False
    assert params["base_lr"]["required"] is True
    assert params["step_size"]["tunable"] is True and params["base_lr"]["tunable"] is True
    cosine = next(p for p in catalog["policies"] if p["name"] == "cosine")
    assert {p["name"]: p["tunable"] for p in cosine["params"]} == {
        "base_lr": True,
        "max_lr": True,
        "total_iterations": False,  # the budget is the trial's, never searched
    }
    sgd = next(o for o in catalog["optimizers"] if o["name"] == "sgd")
    assert all(p["tunable"] is None for p in sgd["params"])
    dog = next(o for o in catalog["optimizers"] if o["name"] == "dog")
    assert (dog["batchable"], dog["parameter_free"], dog["averaged"]) == (False, True, True)
    assert {p["name"]: p["default"] for p in dog["params"]}["reps_rel"] == 1e-6
    assert next(o for o in catalog["optimizers"] if o["name"] == "sgd_schedulefree")[
        "schedule_free"
    ]
    assert triangular["batchable"] is None  # policies have no stepping rules
    assert client.get("/api/v1/catalog").status_code == 401


def test_health_checks_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "ray": "not used"}


def test_the_schema_enums_are_the_databases() -> None:
    assert get_args(StudyStatus) == STUDY_STATUSES
    assert get_args(StudyPhase) == STUDY_PHASES
    assert get_args(TrialState) == TRIAL_STATES


def test_the_openapi_document_is_complete(client: TestClient) -> None:
    document: dict[str, Any] = client.get("/openapi.json").json()
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) == 22  # studies, catalog, schedules, keys
    for path, method, operation in operations:
        assert operation.get("tags") and operation.get("summary"), (path, method)
        if path.startswith("/api/v1"):
            assert {"401", "503"} <= operation["responses"].keys(), (path, method)
        if "{study_id}" in path:
            assert "404" in operation["responses"], (path, method)
    submit = document["paths"]["/api/v1/studies"]["post"]
    assert {"202", "413", "422", "429"} <= submit["responses"].keys()
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body["examples"] == StudySpec.model_config["json_schema_extra"]["examples"]  # type: ignore[index]
    assert "409" in document["paths"]["/api/v1/studies/{study_id}/cancel"]["post"]["responses"]
    view = document["components"]["schemas"]["StudyView"]
    assert all("description" in p or "$ref" in p for p in view["properties"].values())
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
