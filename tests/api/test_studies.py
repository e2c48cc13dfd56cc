"""The studies API on a real database: submit, list, get, cancel, results and reports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from api.main import create_app
from service.driver import PhaseSink
from service.models import ReportCache
from service.reports import build_report
from service.sinks import DatabaseSink
from service.store import Store
from tests.api.conftest import strict_json
from workers.events import (
    PlannedTrial,
    PlannedTuning,
    StudyPlanned,
    TuningStarted,
    TuningTrialEnded,
)

STUDIES = "/api/v1/studies"
Headers = dict[str, str]


def test_submit_answers_202_with_location_and_the_queued_study(
    client: TestClient, alice: Headers, spec: Callable[..., dict[str, Any]]
) -> None:
    response = client.post(STUDIES, json=spec(), headers=alice)
    assert response.status_code == 202
    study = response.json()
    assert response.headers["location"] == f"{STUDIES}/{study['id']}"
    assert study["status"] == "queued"
    assert study["name"] == "digits: triangular vs fixed"
    # The stored spec is the normalised one: shorthands expanded, baseline filled in.
    assert study["spec"]["seeds"] == [0, 1]
    assert study["spec"]["dataset"] == {"name": "digits", "options": {}}
    assert study["spec"]["baseline"] == "fixed"
    assert study["ray_job_id"] is None and study["ray_dashboard_url"] is None
    assert client.get(response.headers["location"], headers=alice).json() == study


def test_get_shows_progress_bounds_best_accuracy_and_the_ray_job(
    client: TestClient, alice: Headers, trained_study: str, settings: Any
) -> None:
    study = client.get(f"{STUDIES}/{trained_study}", headers=alice).json()
    assert study["status"] == "succeeded"
    assert study["phase"] == "done"
    assert study["progress"]["trials_done"] == study["progress"]["trials_total"] == 4
    assert study["progress"]["iterations_done"] == study["progress"]["iterations_total"] == 240
    assert study["progress"]["tuning_trials_done"] == study["progress"]["tuning_trials_total"] == 0
    assert study["progress"]["best_accuracy"] == {
        "fixed": pytest.approx(0.7),
        "triangular": pytest.approx(0.95),
    }
    assert study["bounds"]["base_lr"] == 0.03
    job = f"clrstudy-{trained_study}"
    assert study["ray_job_id"] == job
    dashboard = f"http://{settings.ray_dashboard_host}:{settings.ray_dashboard_port}"
    assert study["ray_dashboard_url"] == f"{dashboard}/#/jobs/{job}"
    assert study["started_at"] is not None and study["finished_at"] is not None
    assert study["links"]["report_html"] == f"{STUDIES}/{trained_study}/report.html"


def test_a_tuning_study_shows_its_phase_search_progress_and_trials(
    client: TestClient, alice: Headers, store: Store, submit: Callable[..., dict[str, Any]]
) -> None:
    study_id = submit(alice)["id"]
    store.transition(study_id, "running", expected={"queued"})
    sink = PhaseSink(DatabaseSink(store, study_id), store, study_id)
    trials = (PlannedTrial("fixed-s0", "fixed", 0, 60),)
    sink.emit(StudyPlanned(21, trials, (PlannedTuning("fixed", 3, 40),)))
    space = {"lr": {"type": "float", "low": 0.001, "high": 1.0, "log": True}}
    sink.emit(TuningStarted("fixed", f"clrstudy-{study_id}/fixed", 3, 40, space))
    sink.emit(TuningTrialEnded("fixed", 0, {"lr": 0.1}, "stopped", 20, 0.7, 0.5))
    sink.emit(TuningTrialEnded("fixed", 1, {"lr": 0.01}, "interrupted", 5, None, 0.1))

    study = client.get(f"{STUDIES}/{study_id}", headers=alice).json()
    assert study["phase"] == "tuning"
    progress = study["progress"]
    assert (progress["tuning_trials_done"], progress["tuning_trials_total"]) == (1, 3)
    assert (progress["trials_done"], progress["trials_total"]) == (0, 1)
    tuning = client.get(f"{STUDIES}/{study_id}/results", headers=alice).json()["tuning"]
    assert [(t["number"], t["state"]) for t in tuning["fixed"]["trials"]] == [
        (0, "stopped"),
        (1, "interrupted"),
    ]
    assert tuning["fixed"]["best"] is None and tuning["fixed"]["space"] == space


def test_list_pages_newest_first_and_filters_by_status_and_name(
    client: TestClient, alice: Headers, submit: Any
) -> None:
    ids = [submit(alice, name=f"run {i}")["id"] for i in range(3)]
    submit(alice, name="Other THING")
    client.post(f"{STUDIES}/{ids[0]}/cancel", headers=alice)

    page = client.get(STUDIES, params={"limit": 2, "offset": 1}, headers=alice).json()
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    assert [s["id"] for s in page["items"]] == [ids[2], ids[1]]

    cancelled = client.get(STUDIES, params={"status": "cancelled"}, headers=alice).json()
    assert [s["id"] for s in cancelled["items"]] == [ids[0]]
    named = client.get(STUDIES, params={"name": "thing"}, headers=alice).json()
    assert [s["name"] for s in named["items"]] == ["Other THING"]


def test_bad_list_parameters_are_422_naming_the_parameter(
    client: TestClient, alice: Headers
) -> None:
    bad = ({"status": "paused"}, {"limit": 0}, {"limit": 201}, {"offset": -1}, {"name": "a\x00"})
    for params in bad:
        response = client.get(STUDIES, params=params, headers=alice)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]


def test_an_idempotency_key_makes_a_retry_return_the_same_study(
    client: TestClient, alice: Headers, bob: Headers, spec: Callable[..., dict[str, Any]]
) -> None:
    first = client.post(STUDIES, json=spec(), headers={**alice, "Idempotency-Key": "k-1"})
    retry = client.post(STUDIES, json=spec(), headers={**alice, "Idempotency-Key": "k-1"})
    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json()
    assert retry.headers["location"] == first.headers["location"]
    # Keys are per owner: Bob's "k-1" is his own study.
    other = client.post(STUDIES, json=spec(), headers={**bob, "Idempotency-Key": "k-1"})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    assert client.get(STUDIES, headers=alice).json()["total"] == 1


def test_the_owner_limit_counts_queued_studies(
    client: TestClient, store: Store, alice: Headers, bob: Headers, submit: Any, spec: Any
) -> None:
    ids = [submit(alice, name=f"run {i}")["id"] for i in range(5)]  # the limit is 5
    too_many = client.post(STUDIES, json=spec(), headers=alice)
    assert too_many.status_code == 429
    assert "5 queued studies" in too_many.json()["detail"]
    assert "MAX_QUEUED_STUDIES_PER_OWNER=5" in too_many.json()["detail"]
    submit(bob)  # another owner's count is his own
    # A running study no longer waits: the dispatcher holds running ones to their own limit.
    store.transition(ids[0], "running", expected={"queued"})
    keyed = client.post(STUDIES, json=spec(), headers={**alice, "Idempotency-Key": "again"})
    assert keyed.status_code == 202
    # A retry of a POST that was accepted still returns its study at the limit.
    retry = client.post(STUDIES, json=spec(), headers={**alice, "Idempotency-Key": "again"})
    assert retry.status_code == 202 and retry.json()["id"] == keyed.json()["id"]


def test_parallel_posts_cannot_pass_the_owner_limit_together(
    client: TestClient, alice: Headers, spec: Callable[..., dict[str, Any]]
) -> None:
    def post(i: int) -> int:
        return client.post(STUDIES, json=spec(name=f"p{i}"), headers=alice).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(post, range(16)))
    assert sorted(codes) == [202] * 5 + [429] * 11
    assert client.get(STUDIES, headers=alice).json()["total"] == 5


def test_an_idempotency_key_with_another_body_is_422(
    client: TestClient, alice: Headers, spec: Callable[..., dict[str, Any]]
) -> None:
    first = client.post(STUDIES, json=spec(), headers={**alice, "Idempotency-Key": "k-1"})
    assert first.status_code == 202
    other = client.post(
        STUDIES, json=spec(name="another"), headers={**alice, "Idempotency-Key": "k-1"}
    )
    assert other.status_code == 422
    (error,) = other.json()["detail"]
    assert error["loc"] == ["header", "idempotency-key"]
    assert first.json()["id"] in error["msg"]
    assert client.get(STUDIES, headers=alice).json()["total"] == 1


TUNED_ARM: dict[str, Any] = {
    "name": "tuned",
    "optimizer": "sgd",
    "policy": "fixed",
    "tuning": {"trials": 3, "space": {"lr": {"low": 0.001, "high": 1.0}}},
}

INVALID_SPECS: list[tuple[dict[str, Any], list[str], list[str]]] = [
    ({"dataset": "imagenet"}, ["body", "dataset"], ["'imagenet'", "known: digits"]),
    ({"range_test": None}, ["body"], ["'auto'", "no range_test"]),
    ({"iterations": 20_000}, ["body"], ["iterations is 20000", "limit of 10000"]),
    ({"seeds": 5}, ["body", "seeds"], ["between 1 and 4", "got 5"]),
    ({"batch_size": 0}, ["body", "batch_size"], ["greater than or equal to 1"]),
    ({"arms": "fixed"}, ["body", "arms"], ["valid list"]),
    ({"unknown": 1}, ["body", "unknown"], ["Extra inputs"]),
    (
        {"arms": [{**TUNED_ARM, "tuning": {**TUNED_ARM["tuning"], "trials": 0}}]},
        ["body", "arms", 0, "tuning", "trials"],
        ["between 1 and", "got 0"],
    ),
    (  # MAX_TUNING_TRIALS is 5 in these tests
        {"arms": [{**TUNED_ARM, "tuning": {**TUNED_ARM["tuning"], "trials": 6}}]},
        ["body", "arms", 0, "tuning", "trials"],
        ["between 1 and 5", "got 6"],
    ),
    (
        {"arms": [{**TUNED_ARM, "tuning": {"trials": 3, "space": {"lr": {"low": 1, "high": 1}}}}]},
        ["body", "arms", 0, "tuning", "space"],
        ["lr: empty search range: low (1.0) must be below high (1.0)"],
    ),
]


def test_invalid_specs_are_422_naming_the_field_and_store_nothing(
    client: TestClient, alice: Headers, spec: Callable[..., dict[str, Any]]
) -> None:
    for changes, loc, words in INVALID_SPECS:
        response = client.post(STUDIES, json=spec(**changes), headers=alice)
        assert response.status_code == 422, changes
        error = next(e for e in response.json()["detail"] if e["loc"] == loc)
        assert {"loc", "msg", "type"} <= error.keys()
        for word in words:
            assert word in error["msg"], (changes, error)
    for body in (b"[1, 2]", b"not json", b'"a string"', b"", b'{"name": "x"'):
        headers = {**alice, "Content-Type": "application/json"}
        assert client.post(STUDIES, content=body, headers=headers).status_code == 422, body
    assert client.get(STUDIES, headers=alice).json()["total"] == 0


def test_a_huge_seed_count_is_422_not_a_memory_error(
    client: TestClient, alice: Headers, spec: Callable[..., dict[str, Any]]
) -> None:
    response = client.post(STUDIES, json=spec(seeds=10**12), headers=alice)
    assert response.status_code == 422
    assert "a seed count must be between 1 and 4" in response.text


def test_bodies_over_the_limit_are_413(client: TestClient, alice: Headers) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    big = b" " * (2 * 1024 * 1024)
    assert client.post(STUDIES, content=big, headers=headers).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size counts
        for _ in range(32):
            yield b" " * 65536

    streamed = client.post(STUDIES, content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert "1048576 bytes" in streamed.json()["detail"]
    assert client.get(STUDIES, headers=alice).json()["total"] == 0


def test_non_finite_numbers_in_a_body_are_422_naming_the_field(
    client: TestClient, alice: Headers, spec: Callable[..., dict[str, Any]]
) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    arms = spec()["arms"]
    arms[0]["policy"]["lr"] = float("inf")
    for changes, loc in (
        ({"batch_size": float("nan")}, ["body", "batch_size"]),
        ({"arms": arms}, ["body", "arms", 0, "policy", "lr"]),
        ({"dataset": {"name": "synthetic", "difficulty": -float("inf")}}, None),
        ({"target_accuracy": float("nan")}, ["body", "target_accuracy"]),
    ):
        # As Python's json.dumps writes them: NaN, Infinity, -Infinity.
        response = client.post(STUDIES, content=json.dumps(spec(**changes)), headers=headers)
        assert response.status_code == 422, (changes, response.text)
        errors = strict_json(response.text)["detail"]
        assert errors[0]["type"] == "finite_number"
        assert errors[0]["loc"] == (loc or ["body", "dataset", "difficulty"])
    assert client.get(STUDIES, headers=alice).json()["total"] == 0


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("../secrets.npz", "'..' is not allowed"),
        ("sets/../../etc/data.npz", "'..' is not allowed"),
        ("/etc/passwd", "absolute path"),
        ("C:\\data\\x.npz", "absolute path"),
        ("sets/x\x00.npz", "NUL byte"),
    ],
)
def test_a_data_path_out_of_data_root_is_422_at_submission(
    client: TestClient, alice: Headers, spec: Callable[..., dict[str, Any]], path: str, words: str
) -> None:
    response = client.post(STUDIES, json=spec(dataset={"name": "npz", "path": path}), headers=alice)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "dataset", "options", "path"]
    assert words in error["msg"]
    assert client.get(STUDIES, headers=alice).json()["total"] == 0
    inside = client.post(
        STUDIES, json=spec(dataset={"name": "npz", "path": "sets/x.npz"}), headers=alice
    )
    assert inside.status_code == 202, inside.text


def test_requests_without_a_valid_key_are_401(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer clr_nope"}, {"Authorization": "Basic YTpi"}):
        for method, path in (("GET", STUDIES), ("POST", STUDIES), ("GET", "/api/v1/catalog")):
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (headers, path)
            assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_is_refused(client: TestClient, store: Store) -> None:
    record, key = store.create_api_key("carol")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get(STUDIES, headers=headers).status_code == 200
    store.revoke_api_key(record.id)
    assert client.get(STUDIES, headers=headers).status_code == 401


def test_owners_cannot_see_or_cancel_each_others_studies(
    client: TestClient, alice: Headers, bob: Headers, admin: Headers, submit: Any
) -> None:
    mine = submit(alice)["id"]
    theirs = submit(bob)["id"]
    for path in ("", "/trials", "/results", "/report", "/report.csv", "/report.html"):
        assert client.get(f"{STUDIES}/{theirs}{path}", headers=alice).status_code == 404
    assert client.post(f"{STUDIES}/{theirs}/cancel", headers=alice).status_code == 404
    assert client.get(f"{STUDIES}/{theirs}", headers=bob).json()["status"] == "queued"
    assert [s["id"] for s in client.get(STUDIES, headers=alice).json()["items"]] == [mine]
    seen = {s["id"] for s in client.get(STUDIES, headers=admin).json()["items"]}
    assert seen == {mine, theirs}
    assert client.get(f"{STUDIES}/{theirs}", headers=admin).status_code == 200


def test_unknown_or_malformed_ids_are_404(client: TestClient, alice: Headers) -> None:
    unknown = "0b7d6f0e-3c1a-4f59-9a51-2f0c8f1f6a1e"
    for study_id in ("nope", "1", unknown, unknown.upper(), "%00", "x" * 500):
        for path in ("", "/trials", "/report"):
            response = client.get(f"{STUDIES}/{study_id}{path}", headers=alice)
            assert response.status_code == 404, (study_id, path)
            assert "no study" in response.json()["detail"]
        assert client.post(f"{STUDIES}/{study_id}/cancel", headers=alice).status_code == 404


def test_cancel_a_queued_study_then_again_is_409(
    client: TestClient, alice: Headers, submit: Any
) -> None:
    study_id = submit(alice)["id"]
    cancelled = client.post(f"{STUDIES}/{study_id}/cancel", headers=alice)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"{STUDIES}/{study_id}/cancel", headers=alice)
    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"]


def test_cancel_a_running_study_asks_the_dispatcher_to_stop_it(
    client: TestClient, store: Store, alice: Headers, submit: Any
) -> None:
    study_id = submit(alice)["id"]
    store.transition(study_id, "running", expected={"queued"})
    study = client.post(f"{STUDIES}/{study_id}/cancel", headers=alice).json()
    assert (study["status"], study["cancel_requested"]) == ("running", True)


def test_a_queued_study_has_empty_trials_and_results(
    client: TestClient, alice: Headers, submit: Any
) -> None:
    study_id = submit(alice)["id"]
    assert client.get(f"{STUDIES}/{study_id}/trials", headers=alice).json() == []
    results = client.get(f"{STUDIES}/{study_id}/results", headers=alice).json()
    assert (results["format"], results["status"], results["trials"]) == (1, "queued", [])
    csv_text = client.get(f"{STUDIES}/{study_id}/report.csv", headers=alice).text
    assert csv_text.splitlines()[0].startswith("study,arm,seed")
    assert len(csv_text.splitlines()) == 1


@pytest.mark.parametrize("planned", [False, True], ids=["queued", "in range test"])
def test_a_study_without_finished_trials_has_a_report_saying_so(
    client: TestClient, store: Store, alice: Headers, submit: Any, planned: bool
) -> None:
    study_id = submit(alice)["id"]
    if planned:
        store.transition(study_id, "running", expected={"queued"})
        trials = (PlannedTrial("fixed-s0", "fixed", 0, 60),)
        DatabaseSink(store, study_id).emit(StudyPlanned(21, trials))
    report = client.get(f"{STUDIES}/{study_id}/report", headers=alice)
    assert report.status_code == 200
    assert report.json()["partial"] is True
    assert report.json()["trials"]["finished"] == 0
    html = client.get(f"{STUDIES}/{study_id}/report.html", headers=alice)
    assert html.status_code == 200 and 'id="partial"' in html.text


def test_a_run_study_has_trials_results_and_reports_with_its_arms(
    client: TestClient, alice: Headers, trained_study: str
) -> None:
    base = f"{STUDIES}/{trained_study}"
    trials = client.get(f"{base}/trials", headers=alice).json()
    assert [(t["trial_id"], t["state"]) for t in trials] == [
        ("fixed-s0", "completed"),
        ("fixed-s1", "completed"),
        ("triangular-s0", "completed"),
        ("triangular-s1", "completed"),
    ]
    results = client.get(f"{base}/results", headers=alice).json()
    assert results["status"] == "succeeded"
    assert [len(t["points"]) for t in results["trials"]] == [7, 7, 7, 7]
    assert len(results["range_test"]["points"]) == 100

    report = client.get(f"{base}/report", headers=alice).json()
    assert report["partial"] is False
    assert [row["arm"] for row in report["arms"]] == ["fixed", "triangular"]
    assert report["baseline"] == "fixed"
    assert report["verdicts"]

    response = client.get(f"{base}/report.csv", headers=alice)
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 4 * 7
    assert {r["arm"] for r in rows} == {"fixed", "triangular"}

    html = client.get(f"{base}/report.html", headers=alice)
    assert html.headers["content-type"].startswith("text/html")
    assert "triangular" in html.text and "<svg" in html.text


def leave_data(settings: Any, study_id: str) -> list[Path]:
    """What a run leaves under STORAGE_PATH (folders named after the study), and an Optuna
    study of a tuned arm; the paths."""
    root = Path(settings.storage_path)
    paths = [
        root / f"{study_id}-trials" / "trial_0" / "checkpoint_000000" / "state.pt",
        root / f"{study_id}-tuning-fixed" / "searcher-state.pkl",
        root / f"{study_id}-fixed-s0.failed",
    ]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    storage = optuna.storages.RDBStorage(settings.database_url)
    try:
        optuna.create_study(study_name=f"clrstudy-{study_id}/fixed", storage=storage)
    finally:
        storage.remove_session()
        storage.engine.dispose()
    return paths


def optuna_studies(settings: Any) -> list[str]:
    storage = optuna.storages.RDBStorage(settings.database_url)
    try:
        return optuna.get_all_study_names(storage)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_delete_removes_the_studys_rows_optuna_studies_and_files(
    client: TestClient,
    store: Store,
    settings: Any,
    alice: Headers,
    bob: Headers,
    admin: Headers,
    trained_study: str,
    submit: Any,
) -> None:
    other = submit(alice)["id"]
    mine, kept = leave_data(settings, trained_study), leave_data(settings, other)
    path = f"{STUDIES}/{trained_study}"
    assert client.delete(path, headers=bob).status_code == 404  # another owner's
    response = client.delete(path, headers=alice)
    assert response.status_code == 204, response.text
    for suffix in ("", "/trials", "/results", "/report"):
        assert client.get(f"{path}{suffix}", headers=alice).status_code == 404
    assert not any(p.exists() for p in mine) and all(p.exists() for p in kept)
    assert not list(Path(settings.storage_path).glob(f"{trained_study}*"))
    assert optuna_studies(settings) == [f"clrstudy-{other}/fixed"]
    with store.engine.connect() as connection:
        for table in ("clr_trials", "clr_range_test_points", "clr_report_cache"):
            assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0
    assert client.delete(path, headers=alice).status_code == 404
    # An admin deletes anyone's; a queued study is cancelled and deleted at once.
    assert client.delete(f"{STUDIES}/{other}", headers=admin).status_code == 204
    assert client.get(STUDIES, headers=alice).json()["total"] == 0


def test_delete_of_a_running_study_cancels_it_first(
    client: TestClient, store: Store, alice: Headers, submit: Any
) -> None:
    study_id = submit(alice)["id"]
    store.transition(study_id, "running", expected={"queued"})
    refused = client.delete(f"{STUDIES}/{study_id}", headers=alice)
    assert refused.status_code == 409 and "cancel is requested" in refused.json()["detail"]
    study = client.get(f"{STUDIES}/{study_id}", headers=alice).json()
    assert study["status"] == "running" and study["cancel_requested"] is True
    store.transition(study_id, "cancelled", expected={"running"})  # its driver stopped
    assert client.delete(f"{STUDIES}/{study_id}", headers=alice).status_code == 204
    assert store.get_study(study_id) is None


def cached_reports(store: Store) -> dict[str, Any]:
    with store.engine.connect() as connection:
        rows = connection.execute(select(ReportCache.study_id, ReportCache.report))
        return {study_id: report for study_id, report in rows}


def test_a_finished_studys_report_is_kept_until_something_is_written_about_it(
    client: TestClient, store: Store, alice: Headers, trained_study: str, submit: Any
) -> None:
    report = f"{STUDIES}/{trained_study}/report"
    built = client.get(report, headers=alice).json()
    assert cached_reports(store) == {trained_study: built}
    # Served from the cache: a changed entry is what the next request gets.
    with store.engine.begin() as connection:
        connection.execute(update(ReportCache).values(report={"from": "the cache"}))
    assert client.get(report, headers=alice).json() == {"from": "the cache"}
    # The dispatcher records an interrupted tuning trial after the study ended: rebuilt.
    store.record_tuning_trial_end(
        trained_study, TuningTrialEnded("fixed", 0, {"lr": 0.1}, "interrupted", 5, None, 0.1)
    )
    rebuilt = client.get(report, headers=alice).json()
    assert rebuilt == build_report(store.results(trained_study) or {}) != built
    assert cached_reports(store) == {trained_study: rebuilt}
    # A study that has not ended is reported afresh each time, and not kept.
    queued = submit(alice)["id"]
    assert client.get(f"{STUDIES}/{queued}/report", headers=alice).status_code == 200
    assert queued not in cached_reports(store)


def test_an_unreachable_database_is_503_and_loses_nothing(
    outage: Any, settings_for: Any, spec: Callable[..., dict[str, Any]]
) -> None:
    app = create_app(settings_for(outage.url), run_studies=False)
    with TestClient(app) as client:
        _, key = app.state.store.create_api_key("alice")
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "once"}
        outage.down(app)
        refused = client.post(STUDIES, json=spec(), headers=headers)
        assert refused.status_code == 503
        assert "database is unavailable" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "5"
        assert client.get(STUDIES, headers=headers).status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"].startswith("unreachable")
        assert client.get("/healthz").status_code == 200

        outage.up()
        accepted = client.post(STUDIES, json=spec(), headers=headers)
        assert accepted.status_code == 202
        retried = client.post(STUDIES, json=spec(), headers=headers)
        assert retried.json()["id"] == accepted.json()["id"]
        assert client.get(STUDIES, headers=headers).json()["total"] == 1
        assert client.get("/readyz").status_code == 200
