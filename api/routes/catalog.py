"""The catalog: what a StudySpec may name, with each entry's parameters."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentOwner
from api.errors import UNAUTHORIZED, UNAVAILABLE
from api.schemas import CatalogEntry, CatalogView
from clr.policies import POLICIES
from workers.datasets import DATASETS
from workers.models import MODELS
from workers.optimizers import OPTIMIZERS

router = APIRouter(tags=["catalog"], responses={**UNAUTHORIZED, **UNAVAILABLE})


@router.get("/catalog", response_model=CatalogView, summary="List what a study may use")
def get_catalog(owner: CurrentOwner) -> CatalogView:
    """The data sets, models, optimizers and LR policies this server accepts."""
    return CatalogView(
        **{
            kind: [CatalogEntry.model_validate(entry.describe()) for entry in registry.values()]
            for kind, registry in (
                ("datasets", DATASETS),
                ("models", MODELS),
                ("optimizers", OPTIMIZERS),
                ("policies", POLICIES),
            )
        }
    )
