"""Fuzzing: schemathesis sends requests generated from the app's OpenAPI document to every
operation, authenticated; none may answer with a server error. On top of what it draws:
odd path parameters (digits that are not ASCII, signs, huge numbers) and JSON bodies with
NaN or an infinity in place of a number, which it never generates."""

from __future__ import annotations

import json
import math
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from schemathesis.schemas import APIOperation
from starlette.testclient import TestClient

from api.main import create_app
from service.settings import Settings

MAX_EXAMPLES = 20  # per operation and database: the whole run stays under a minute
# "²" and "¹" pass str.isdigit() but not int(); "١" passes both.
ODD_IDS = ("²", "¹", "١", "0", "-1", "1.5", "1e3", " 1", "9" * 40, "%00")
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


@pytest.mark.slow
def test_no_operation_answers_with_a_server_error(
    settings: Settings, alice: dict[str, str], trained_study: str
) -> None:
    # A second app on the database of `alice` and her study: schemathesis runs its lifespan.
    app = create_app(settings, run_studies=False)
    # Bodies schemathesis cannot send (json.dumps with NaN) go through this client.
    client = TestClient(app, raise_server_exceptions=False)
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        loaded = list(schema.get_all_operations())
        operations = [result.ok() for result in loaded if isinstance(result, Ok)]
        assert len(operations) == len(loaded) == 22  # studies, catalog, schedules, keys
        for operation in operations:
            check_operation(operation, alice, trained_study, client)
    finally:
        # schemathesis keeps the app's lifespan running for the whole process otherwise.
        asgi.shutdown_lifespans()


def check_operation(
    operation: APIOperation, headers: dict[str, str], study_id: str, client: TestClient
) -> None:
    """Valid and invalid requests to `operation`, also about an existing study; raises on the
    first server error."""
    strategies = [operation.as_strategy(mode) for mode in GenerationMode]
    if "{study_id}" in operation.path:
        known = {"study_id": study_id}
        strategies += [operation.as_strategy(m, path_parameters=known) for m in GenerationMode]
    for name in ("study_id", "schedule_id", "key_id"):
        if f"{{{name}}}" in operation.path:
            strategies += [operation.as_strategy(path_parameters={name: odd}) for odd in ODD_IDS]
    cases = st.one_of(strategies)

    @given(case=cases)
    # Derandomized: CI runs the cases that ran here; a new finding comes from a change,
    # not from the draw.
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=True,
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(headers=dict(headers))  # call() adds its own headers to the dict
        case.validate_response(response, checks=[not_a_server_error])

    fuzz()
    if operation.method.upper() in ("POST", "PATCH", "PUT") and operation.body:
        check_non_finite_bodies(operation, headers, client)


def check_non_finite_bodies(
    operation: APIOperation, headers: dict[str, str], client: TestClient
) -> None:
    """Valid bodies with one number (or, where none, one value) made NaN or infinite, as
    Python's JSON writes them; raises on the first server error."""

    @given(case=operation.as_strategy(), data=st.data())
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=True,
        database=None,
    )
    def fuzz(case: schemathesis.Case, data: st.DataObject) -> None:
        leaves = list(_leaves(case.body, ()))
        if not leaves:
            return
        numbers = [loc for loc, value in leaves if isinstance(value, int | float)]
        loc = data.draw(st.sampled_from(numbers or [loc for loc, _ in leaves]))
        body = _replaced(case.body, loc, data.draw(NON_FINITE))
        response = client.request(
            case.method,
            case.formatted_path,
            params=case.query,
            content=json.dumps(body),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code < 500, (case.method, case.formatted_path, body)

    fuzz()


def _leaves(value: Any, loc: tuple[Any, ...]) -> Any:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*loc, index))
    else:
        yield loc, value


def _replaced(value: Any, loc: tuple[Any, ...], new: float) -> Any:
    if not loc:
        return new
    head, *rest = loc
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[head] = _replaced(value[head], tuple(rest), new)
    return copy
