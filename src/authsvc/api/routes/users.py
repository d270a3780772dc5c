"""The caller's own account."""

from __future__ import annotations

from fastapi import APIRouter

from authsvc.api.responses import BEARER_ERRORS
from authsvc.api.security import CurrentUser
from authsvc.schemas import UserOut

router = APIRouter(tags=["account"])


@router.get(
    "/me", response_model=UserOut, summary="The authenticated user", responses=BEARER_ERRORS
)
async def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)
