"""Errors the API answers with, and their documentation in the OpenAPI schema.

Bad input never yields a 500: FastAPI answers 422 for invalid requests, the routes 404, 409
and 429, FastAPI's body limit 413, and `DatabaseUnavailable` becomes a 503 here.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.schemas import ErrorView
from service.db import DatabaseUnavailable

RETRY_AFTER_S = 5  # seconds a client should wait before retrying after a 503

UNAVAILABLE_DETAIL = (
    "the database is unavailable, so nothing was read or stored; retry in a few seconds "
    "(a POST /studies with the same Idempotency-Key will not create a second study)"
)


Responses = dict[int | str, dict[str, Any]]  # FastAPI's `responses=`


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorView, "description": description}


UNAUTHORIZED: Responses = {401: _doc("No valid API key: send `Authorization: Bearer <key>`.")}
NOT_FOUND: Responses = {404: _doc("No such study, or it belongs to another owner.")}
CONFLICT: Responses = {409: _doc("The study has finished already: there is nothing to cancel.")}
TOO_LARGE: Responses = {413: _doc("The request body is over the server's limit (MAX_BODY_BYTES).")}
TOO_MANY: Responses = {429: _doc("The owner has as many queued studies as allowed.")}
UNAVAILABLE: Responses = {503: _doc("The database cannot be reached; retry later.")}


def not_found(study_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no study {study_id!r}")


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinity spelled as a string ("nan", "inf"): JSON has no such
    numbers, and a 422 repeats the input it refuses."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def install_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    """Answer an invalid request with a 422 that is valid JSON whatever it was sent, a database
    outage with 503 and an oversized body with a message naming the limit."""

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        return JSONResponse(
            {"detail": json_safe(jsonable_encoder(errors))},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": UNAVAILABLE_DETAIL},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    async def too_large(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the request body is over the limit of {max_body_bytes} bytes"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(DatabaseUnavailable, database_unavailable)
    app.add_exception_handler(status.HTTP_413_CONTENT_TOO_LARGE, too_large)
