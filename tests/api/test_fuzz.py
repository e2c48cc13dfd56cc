"""Fuzzing: schemathesis sends requests generated from the app's OpenAPI document to every
operation, authenticated; none may answer with a server error."""

from __future__ import annotations

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

from api.main import create_app
from service.settings import Settings

MAX_EXAMPLES = 20  # per operation and database: the whole run stays under a minute


@pytest.mark.slow
def test_no_operation_answers_with_a_server_error(
    settings: Settings, alice: dict[str, str], trained_study: str
) -> None:
    # A second app on the database of `alice` and her study: schemathesis runs its lifespan.
    app = create_app(settings, run_studies=False)
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        loaded = list(schema.get_all_operations())
        operations = [result.ok() for result in loaded if isinstance(result, Ok)]
        assert len(operations) == len(loaded) == 19  # studies, catalog, schedules
        for operation in operations:
            check_operation(operation, alice, trained_study)
    finally:
        # schemathesis keeps the app's lifespan running for the whole process otherwise.
        asgi.shutdown_lifespans()


def check_operation(operation: APIOperation, headers: dict[str, str], study_id: str) -> None:
    """Valid and invalid requests to `operation`, also about an existing study; raises on the
    first server error."""
    strategies = [operation.as_strategy(mode) for mode in GenerationMode]
    if "{study_id}" in operation.path:
        known = {"study_id": study_id}
        strategies += [operation.as_strategy(m, path_parameters=known) for m in GenerationMode]
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
