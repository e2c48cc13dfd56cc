"""Admitting a study: its spec validated under the server's limits, and queued once.

Every path that creates a study (the API's route, the scheduler) goes through `submit`, and
every reader of a stored spec (the driver) through `validate_spec`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.settings import Settings
from service.store import Store, StudyRecord

if TYPE_CHECKING:
    from workers.spec import StudySpec

ACTIVE_STATUSES = ("queued", "running")


class TooManyStudies(Exception):
    """The owner has as many queued or running studies as the server allows."""


def validate_spec(spec: Any, settings: Settings) -> StudySpec:
    """`spec` (JSON as sent: a mapping, or whatever a client sent) as a StudySpec under
    `settings`' limits; pydantic's ValidationError names each field that is wrong, with its
    value and what is allowed."""
    from workers.spec import StudySpec  # late: the spec pulls in the workers' registries

    return StudySpec.model_validate(spec, context={"limits": settings.limits()})


def submit(
    store: Store,
    settings: Settings,
    owner_id: int,
    spec: Any,
    idempotency_key: str | None = None,
    *,
    per_owner_limit: bool = True,
) -> tuple[StudyRecord, bool]:
    """Queue `spec` as a new study of `owner_id`: the study and True; or, when the owner used
    `idempotency_key` already, that study and False (also when the owner is at the limit now).

    Raises ValidationError for a spec the limits refuse and, with `per_owner_limit`,
    `TooManyStudies` when the owner has MAX_RUNNING_STUDIES_PER_OWNER queued or running
    studies (the API applies it; schedules do not).
    """
    valid = validate_spec(spec, settings)
    if idempotency_key is not None and (known := store.study_by_key(owner_id, idempotency_key)):
        return known, False
    if per_owner_limit:
        active = sum(
            store.list_studies(owner_id=owner_id, status=s, limit=0)[1] for s in ACTIVE_STATUSES
        )
        if active >= settings.max_running_studies_per_owner:
            raise TooManyStudies(
                f"you have {active} queued or running studies, the most allowed "
                f"(MAX_RUNNING_STUDIES_PER_OWNER={settings.max_running_studies_per_owner}); "
                "wait for one to end or cancel one"
            )
    return store.create_study(
        owner_id, valid.model_dump(mode="json"), valid.name, idempotency_key=idempotency_key
    )
