"""Admitting a study: its spec validated under the server's limits, and queued once, within
the owner's limit of queued studies.

Every path that creates a study (the API's route, the scheduler) goes through `submit`, and
every reader of a stored spec (the driver) through `validate_spec`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from service.settings import Settings
from service.store import Store, StudyRecord

if TYPE_CHECKING:
    from workers.spec import StudySpec


def validate_spec(spec: Any, settings: Settings) -> StudySpec:
    """`spec` (JSON as sent: a mapping, or whatever a client sent) as a StudySpec under
    `settings`' limits; pydantic's ValidationError names each field that is wrong, with its
    value and what is allowed.

    Refused here as well, before anything runs: a NaN or infinite number anywhere (JSON has
    none; Python's parser lets them through), and a data set path that is absolute, holds
    `..` or a NUL byte. Symlinks leaving DATA_ROOT can only be seen where the data lives:
    the driver's loader checks those.
    """
    from workers.spec import StudySpec  # late: the spec pulls in the workers' registries

    non_finite = [
        InitErrorDetails(type="finite_number", loc=loc, input=str(value))
        for loc, value in _non_finite_numbers(spec, ())
    ]
    if non_finite:
        raise ValidationError.from_exception_data("StudySpec", non_finite)
    valid = StudySpec.model_validate(spec, context={"limits": settings.limits()})
    path = valid.dataset.options.get("path")
    if isinstance(path, str) and (problem := data_path_problem(path)):
        raise ValidationError.from_exception_data(
            "StudySpec",
            [
                InitErrorDetails(
                    type=PydanticCustomError("data_path", "{reason}", {"reason": problem}),
                    loc=("dataset", "options", "path"),
                    input=path,
                )
            ],
        )
    return valid


def _non_finite_numbers(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[Any, float]]:
    """Where JSON-like `value` holds NaN or an infinity, and the number."""
    if isinstance(value, float) and not math.isfinite(value):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite_numbers(item, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _non_finite_numbers(item, (*loc, index))


def data_path_problem(path: str) -> str | None:
    """Why a data set path is refused before any file is read (None: it is not)."""
    if "\0" in path:
        return "must not contain a NUL byte"
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute():
        return f"must be relative to DATA_ROOT, got the absolute path {path!r}"
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        return f"must stay inside DATA_ROOT: '..' is not allowed, got {path!r}"
    return None


def submit(
    store: Store,
    settings: Settings,
    owner_id: int,
    spec: Any,
    idempotency_key: str | None = None,
) -> tuple[StudyRecord, bool]:
    """Queue `spec` as a new study of `owner_id`: the study and True; or, when the owner used
    `idempotency_key` already for the same spec, that study and False (also when the owner
    is at the limit now).

    Raises ValidationError for a spec the limits refuse, `IdempotencyKeyReused` for a known
    key sent with another spec, and `TooManyStudies` when the owner has
    MAX_QUEUED_STUDIES_PER_OWNER queued studies, whatever path creates the study.
    """
    valid = validate_spec(spec, settings)
    return store.create_study(
        owner_id,
        valid.model_dump(mode="json"),
        valid.name,
        idempotency_key=idempotency_key,
        max_queued=settings.max_queued_studies_per_owner,
    )
