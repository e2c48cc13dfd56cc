"""Admitting a study: validation under the server's limits, idempotency, the per-owner limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings
from service.store import IdempotencyKeyReused, Store, TooManyStudies
from service.studies import submit, validate_spec
from tests.factories import study_spec


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        max_seeds=2,
        max_queued_studies_per_owner=2,
    )


@pytest.fixture
def owner(store: Store) -> int:
    record, _ = store.create_api_key("alice")
    return record.owner.id


def test_a_spec_is_validated_under_the_settings_limits(settings: Settings) -> None:
    spec = validate_spec(study_spec(), settings)
    assert spec.seeds == [0, 1]  # expanded from "seeds": 2
    with pytest.raises(ValidationError, match="seeds"):
        validate_spec(study_spec(seeds=3), settings)
    with pytest.raises(ValidationError):
        validate_spec(["not", "a", "spec"], settings)


def test_submit_queues_the_validated_spec(store: Store, settings: Settings, owner: int) -> None:
    study, created = submit(store, settings, owner, study_spec(name="night"))
    assert created and study.status == "queued" and study.name == "night"
    assert study.spec == validate_spec(study_spec(name="night"), settings).model_dump(mode="json")
    assert study.spec["seeds"] == [0, 1]


def test_the_queued_limit_refuses_a_new_study_but_not_a_retry(
    store: Store, settings: Settings, owner: int
) -> None:
    first, _ = submit(store, settings, owner, study_spec(), "k1")
    submit(store, settings, owner, study_spec())
    with pytest.raises(TooManyStudies, match=r"you have 2 queued studies.*=2\)"):
        submit(store, settings, owner, study_spec(), "k2")
    again, created = submit(store, settings, owner, study_spec(), "k1")  # a retry of the first
    assert (again.id, created) == (first.id, False)
    # Running and ended studies do not count (the dispatcher limits running ones).
    assert store.transition(first.id, "running", expected={"queued"})
    submit(store, settings, owner, study_spec())
    with pytest.raises(TooManyStudies):
        submit(store, settings, owner, study_spec())
    assert store.list_studies(owner_id=owner)[1] == 3


def test_a_key_reused_with_another_spec_is_refused(
    store: Store, settings: Settings, owner: int
) -> None:
    first, _ = submit(store, settings, owner, study_spec(seeds=2), "k1")
    # The same spec written another way is the same spec.
    again, created = submit(store, settings, owner, study_spec(seeds=[0, 1]), "k1")
    assert (again.id, created) == (first.id, False)
    with pytest.raises(IdempotencyKeyReused, match=first.id) as refused:
        submit(store, settings, owner, study_spec(name="another"), "k1")
    assert refused.value.study.id == first.id
    assert store.list_studies(owner_id=owner)[1] == 1


def test_an_invalid_spec_is_refused_before_its_key_is_looked_up(
    store: Store, settings: Settings, owner: int
) -> None:
    submit(store, settings, owner, study_spec(), "k1")
    with pytest.raises(ValidationError):
        submit(store, settings, owner, study_spec(batch_size=0), "k1")
