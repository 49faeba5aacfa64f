"""Providers: registration, listing, cached and coalesced reads, result upload."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from joblib_app.api.deps import Ctx, CurrentPrincipal, Limit, Offset, prefer_wait
from joblib_app.api.openapi import prefer_wait_parameter, problems
from joblib_app.api.schemas import Page, ProviderOut, ProviderRegister
from joblib_app.api.views import provider_out
from joblib_app.services import provider_reads
from joblib_app.services import providers as provider_service

router = APIRouter(tags=["providers"])


@router.put(
    "/rooms/{room_id}/providers",
    status_code=201,
    summary="Register a provider (or update one's own)",
    responses={
        201: {"description": "Registered"},
        200: {"model": ProviderOut, "description": "Already registered: updated"},
        **problems(400, 403, 404),
    },
)
async def register_provider(
    room_id: str,
    body: ProviderRegister,
    response: Response,
    ctx: Ctx,
    principal: CurrentPrincipal,
) -> ProviderOut:
    registered = await provider_service.register_provider(
        ctx,
        principal,
        room_id,
        category=body.category,
        name=body.name,
        schema=body.schema_,
        content_type=body.content_type,
        worker_id=body.worker_id,
    )
    if not registered.created:
        response.status_code = 200
    return provider_out(registered.provider)


@router.get(
    "/rooms/{room_id}/providers",
    summary="List the providers visible in a room",
    responses=problems(400),
)
async def list_providers(
    room_id: str, ctx: Ctx, principal: CurrentPrincipal, limit: Limit = 50, offset: Offset = 0
) -> Page[ProviderOut]:
    rows, total = await provider_service.list_providers(
        ctx, principal, room_id, limit=limit, offset=offset
    )
    return Page(items=[provider_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/rooms/{room_id}/providers/{full_name}/info",
    summary="Read a provider's registration",
    responses=problems(400, 404),
)
async def provider_info(
    room_id: str, full_name: str, ctx: Ctx, principal: CurrentPrincipal
) -> ProviderOut:
    return provider_out(await provider_service.provider_info(ctx, principal, room_id, full_name))


@router.get(
    "/rooms/{room_id}/providers/{full_name}",
    summary="Read data through a provider",
    response_class=Response,
    responses={
        200: {
            "description": "The provider's answer, byte for byte, in its `content_type`",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problems(400, 404, 502, 503, 504),
    },
    openapi_extra={
        "parameters": [
            {
                "name": "params",
                "in": "query",
                "required": False,
                "style": "form",
                "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "description": "Any query parameters: they are the request the provider "
                "answers, and (as canonical JSON) the cache key",
            },
            prefer_wait_parameter("wait up to N seconds for the provider's answer"),
        ]
    },
)
async def read_provider(
    room_id: str, full_name: str, request: Request, ctx: Ctx, principal: CurrentPrincipal
) -> Response:
    """Read through the provider: cached result at once, else one ``provider_request`` for
    any number of identical concurrent reads, then wait (``Prefer: wait=N``) for the upload."""
    answer = await provider_reads.read_provider(
        ctx, principal, room_id, full_name, request.query_params, prefer_wait(request)
    )
    return Response(content=answer.content, media_type=answer.content_type, headers=answer.headers)


@router.post(
    "/providers/{provider_id}/results",
    status_code=204,
    summary="Upload the result of a provider request",
    responses=problems(403, 404, 409, 413, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The result, stored and served byte for byte",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_result(
    provider_id: str,
    request: Request,
    ctx: Ctx,
    principal: CurrentPrincipal,
    x_request_hash: Annotated[
        str | None,
        # Optional here so that the route checks the provider and the caller before the
        # hash (the reference's order); its format is checked in the body.
        Header(
            description="The `request_id` of the `provider_request` answered",
            json_schema_extra={"pattern": "^[0-9a-f]{64}$"},
        ),
    ] = None,
) -> Response:
    """Store a read's result byte for byte, release its in-flight lock, wake the readers.

    The provider and the caller are checked before the hash, as the reference does: its
    worker SDK stops serving on the ``404`` of a provider that is gone.
    """
    await provider_reads.upload_result(
        ctx,
        principal,
        provider_id,
        x_request_hash,
        request.headers.get("content-type"),
        request.body,
    )
    return Response(status_code=204)


@router.delete(
    "/providers/{provider_id}",
    status_code=204,
    summary="Delete a provider",
    responses=problems(403, 404),
)
async def delete_provider(provider_id: str, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    await provider_service.delete_provider(ctx, principal, provider_id)
    return Response(status_code=204)
