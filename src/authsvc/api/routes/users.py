"""The caller's own account."""

from __future__ import annotations

from fastapi import APIRouter

from authsvc.api.fastpath import fast_me, fast_route
from authsvc.api.responses import BEARER_ERRORS
from authsvc.api.security import CurrentUser
from authsvc.schemas import UserOut

router = APIRouter(tags=["account"])


async def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


# The plain success case skips FastAPI's dependency solving (api.fastpath).
router.add_api_route(
    "/me",
    me,
    methods=["GET"],
    response_model=UserOut,
    summary="The authenticated user",
    responses=BEARER_ERRORS,
    route_class_override=fast_route(fast_me),
)
