"""Public metadata other services use to verify tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from authsvc.api.deps import ContextDep
from authsvc.schemas import JWKS

router = APIRouter(tags=["discovery"])


@router.get("/.well-known/jwks.json", response_model=JWKS, summary="Public keys of access tokens")
async def jwks(ctx: ContextDep, response: Response) -> JWKS:
    # Short cache: verifiers refetch soon enough to see a rotation's new key.
    response.headers["Cache-Control"] = "public, max-age=300"
    return JWKS.model_validate(ctx.codec.jwks())
