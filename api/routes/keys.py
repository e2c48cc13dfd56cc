"""API keys, for admins: list them with their last use, and revoke one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, Field

from api.deps import AdminOwner, StoreDep
from api.errors import UNAUTHORIZED, UNAVAILABLE, Responses, _doc
from service.store import ApiKeyRecord

PREFIX = "/keys"
FORBIDDEN: Responses = {403: _doc("The caller is not an admin.")}

router = APIRouter(
    prefix=PREFIX, tags=["keys"], responses={**UNAUTHORIZED, **FORBIDDEN, **UNAVAILABLE}
)


class KeyView(BaseModel):
    """An API key as listed: never the key itself (only its hash is stored)."""

    id: int
    owner: str = Field(description="The owner's name.")
    admin: bool
    prefix: str = Field(description="The key's first characters; not unique.")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Its last use (to the minute).")
    revoked_at: datetime | None


def key_view(key: ApiKeyRecord) -> KeyView:
    return KeyView(
        id=key.id,
        owner=key.owner.name,
        admin=key.owner.admin,
        prefix=key.prefix,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


@router.get("", response_model=list[KeyView], summary="List API keys")
def list_keys(admin: AdminOwner, store: StoreDep) -> list[KeyView]:
    """Every key, revoked ones included, oldest first."""
    return [key_view(k) for k in store.list_api_keys()]


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key",
    responses={404: _doc("No such key, or it is revoked already.")},
)
def revoke_key(
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1, description="The key's id.")],
    admin: AdminOwner,
    store: StoreDep,
) -> Response:
    """The key is refused from now on and its browser sessions end; its studies stay."""
    if not store.revoke_api_key(key_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no unrevoked key {key_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
