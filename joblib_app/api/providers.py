"""Providers: registration, listing, cached and coalesced reads, result upload."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Iterable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Request, Response
from sqlalchemy import Row

from joblib_app.api.deps import (
    Ctx,
    CurrentPrincipal,
    Limit,
    Offset,
    prefer_wait,
)
from joblib_app.api.guards import check_category, owned_worker_or_new
from joblib_app.api.long_poll import STOPPING, until_stopping
from joblib_app.api.openapi import prefer_wait_parameter, problems
from joblib_app.api.privacy import check_readable_room
from joblib_app.api.schemas import Page, ProviderOut, ProviderRegister
from joblib_app.context import AppContext
from joblib_app.domain.names import is_plain_id
from joblib_app.domain.prefer import format_seconds
from joblib_app.limits import check_json_body
from joblib_app.models import utcnow
from joblib_app.names import RESERVED_ROOMS, make_full_name, parse_full_name, validate_room_id
from joblib_app.problems import ProblemError, forbidden, provider_not_found, too_large_problem
from joblib_app.providers.backend import (
    ResultBackend,
    ResultBackendUnavailable,
    ResultTooLargeError,
)
from joblib_app.realtime.events import (
    Outbox,
    ProviderRequest,
    ProviderResultReady,
    ProvidersInvalidate,
    providers_channel,
    room_channel,
)
from joblib_app.store import providers
from joblib_app.views import provider_out

router = APIRouter(tags=["providers"])

T = TypeVar("T")
_HASH = re.compile(r"^[0-9a-f]{64}$")
PROVIDER_RETRY_AFTER = "2"
# How long a read may serve a cached result using a provider row looked up earlier. Bounds
# how late a cache hit notices a provider deleted or re-registered by another process; this
# process forgets its own changes at once, and a cache miss always reads the row afresh.
ROW_CACHE_SECONDS = 1.0
_ROW_CACHE = "providers.row_cache"
_ROW_CACHE_MAX = 10_000


def provider_rooms(room_id: str) -> tuple[str, ...]:
    """Rooms whose providers are visible from ``room_id``."""
    return tuple(dict.fromkeys((room_id, "@global")))


def request_hash(params: dict[str, str]) -> tuple[str, str]:
    """The canonical JSON of read parameters and its SHA-256 hex digest."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return canonical, hashlib.sha256(canonical.encode()).hexdigest()


def result_key(full_name: str, digest: str) -> str:
    return f"provider-result:{full_name}:{digest}"


def inflight_key(full_name: str, digest: str) -> str:
    return f"provider-inflight:{full_name}:{digest}"


def error_key(full_name: str, digest: str) -> str:
    """Where a provider's problem waits for the readers of one read; never a cache."""
    return f"provider-error:{full_name}:{digest}"


# A provider's problem outlives its upload only long enough for the readers it wakes to
# read it (the backend's smallest TTL); the next read of the same key dispatches anew.
PROVIDER_ERROR_TTL_SECONDS = 1
PROVIDER_ERROR_DETAIL_MAX = 2000
# A problem is a short JSON object, not a result: its upload is bounded far below one.
PROVIDER_PROBLEM_MAX_BYTES = 65_536


async def _backend(operation: Awaitable[T]) -> T:
    """Run a result-backend call; an unreachable backend is ``503``."""
    try:
        return await operation
    except ResultBackendUnavailable as exc:
        raise ProblemError(
            503,
            "result-backend-unavailable",
            f"The provider result backend is unavailable: {exc}",
            headers={"Retry-After": PROVIDER_RETRY_AFTER},
        ) from exc


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
    validate_room_id(room_id)
    if room_id in RESERVED_ROOMS and not principal.is_superuser:
        raise forbidden(f"Registering providers in {room_id} requires a superuser")
    check_json_body(body.schema_, ctx.settings.max_json_depth, "schema")
    check_category(body.category, ctx.settings.allowed_provider_categories)
    full_name = make_full_name(room_id, body.category, body.name)
    now = utcnow()
    async with ctx.db.write() as conn:
        worker_id = await owned_worker_or_new(conn, principal, body.worker_id, now)
        row = await providers.insert_provider(
            conn,
            now=now,
            room_id=room_id,
            category=body.category,
            name=body.name,
            full_name=full_name,
            schema=body.schema_,
            content_type=body.content_type,
            user_id=principal.id,
            worker_id=worker_id,
        )
        if row is None:
            existing = await providers.get_provider_by_name(conn, full_name)
            assert existing is not None  # the insert conflicted on this very name
            if existing.user_id != principal.id and not principal.is_superuser:
                raise forbidden(f"Provider '{full_name}' belongs to another user")
            # A superuser's overwrite makes the provider theirs: its worker is theirs now.
            row = await providers.update_provider(
                conn,
                existing.id,
                schema=body.schema_,
                content_type=body.content_type,
                worker_id=worker_id,
                user_id=principal.id,
            )
            response.status_code = 200
    forget_providers(ctx, [full_name])
    outbox = Outbox()
    outbox.emit(ProvidersInvalidate(), room_channel(room_id))
    await ctx.dispatch(outbox)
    return provider_out(row)


@router.get(
    "/rooms/{room_id}/providers",
    summary="List the providers visible in a room",
    responses=problems(400),
)
async def list_providers(
    room_id: str, ctx: Ctx, principal: CurrentPrincipal, limit: Limit = 50, offset: Offset = 0
) -> Page[ProviderOut]:
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        rows, total = await providers.list_providers(
            conn, provider_rooms(room_id), limit=limit, offset=offset
        )
    return Page(items=[provider_out(r) for r in rows], total=total, limit=limit, offset=offset)


def _row_cache(ctx: AppContext) -> dict[str, tuple[Row, float]]:
    """Provider rows recently read by the read path: ``full_name -> (row, expires_at)``."""
    return ctx.extras.setdefault(_ROW_CACHE, {})


def forget_providers(ctx: AppContext, full_names: Iterable[str]) -> None:
    """Drop providers' cached rows after this process changed or deleted them."""
    cache = _row_cache(ctx)
    for full_name in full_names:
        cache.pop(full_name, None)


def _check_visible(room_id: str, full_name: str) -> None:
    """400 for a bad room id; 404 unless ``full_name`` names a provider of a visible room."""
    validate_room_id(room_id)
    parsed = parse_full_name(full_name)
    if parsed is None or parsed.room_id not in provider_rooms(room_id):
        raise provider_not_found(full_name)


async def _visible_provider(ctx: AppContext, room_id: str, full_name: str) -> Row:
    """The provider ``full_name`` if it exists and is visible from ``room_id``, else 404."""
    _check_visible(room_id, full_name)
    async with ctx.db.read() as conn:
        row = await providers.get_provider_by_name(conn, full_name)
    cache = _row_cache(ctx)
    if row is None:
        cache.pop(full_name, None)
        raise provider_not_found(full_name)
    if len(cache) >= _ROW_CACHE_MAX:
        cache.clear()
    cache[full_name] = (row, time.monotonic() + ROW_CACHE_SECONDS)
    return row


async def _recent_provider(ctx: AppContext, room_id: str, full_name: str) -> tuple[Row, bool]:
    """Like :func:`_visible_provider`, but a row read within ``ROW_CACHE_SECONDS`` will do.

    Saves a database round trip per cache hit, the read path's hottest case. The second
    value says whether the row came from the database just now.
    """
    entry = _row_cache(ctx).get(full_name)
    if entry is not None and entry[1] > time.monotonic():
        _check_visible(room_id, full_name)
        return entry[0], False
    return await _visible_provider(ctx, room_id, full_name), True


@router.get(
    "/rooms/{room_id}/providers/{full_name}/info",
    summary="Read a provider's registration",
    responses=problems(400, 404),
)
async def provider_info(
    room_id: str, full_name: str, ctx: Ctx, principal: CurrentPrincipal
) -> ProviderOut:
    row = await _visible_provider(ctx, room_id, full_name)
    await check_readable_room(ctx, principal, room_id)
    return provider_out(row)


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
    provider, fresh = await _recent_provider(ctx, room_id, full_name)
    await check_readable_room(ctx, principal, room_id)
    settings = ctx.settings
    backend = ctx.result_backend
    canonical, digest = request_hash(dict(request.query_params))
    key = result_key(full_name, digest)
    headers: dict[str, str] = {}
    cached = await _backend(backend.get(key))
    if cached is None:
        if not fresh:
            # A miss asks the provider: make sure it still exists and has this content type.
            provider = await _visible_provider(ctx, room_id, full_name)
        cached = await _dispatch_unless_cached(ctx, key, full_name, digest, canonical)
    if cached is None:
        asked = prefer_wait(request)
        wait = settings.provider_long_poll_default_seconds if asked is None else asked
        wait = min(wait, settings.provider_long_poll_max_seconds)
        if asked is not None:
            headers["Preference-Applied"] = f"wait={format_seconds(wait)}"
        outcome = await until_stopping(
            ctx,
            _backend(_wait_result_or_problem(backend, key, error_key(full_name, digest), wait)),
        )
        if outcome is STOPPING:
            raise ProblemError(
                504,
                "provider-timeout",
                f"Provider '{full_name}' did not answer before the server began shutting down",
                headers={"Retry-After": PROVIDER_RETRY_AFTER, **headers},
            )
        cached, problem = outcome
        if problem is not None:
            raise ProblemError(
                502,
                "provider-error",
                problem.decode(errors="replace"),
                title="Provider error",
                headers={"Retry-After": PROVIDER_RETRY_AFTER, **headers},
            )
    if cached is None:
        raise ProblemError(
            504,
            "provider-timeout",
            f"Provider '{full_name}' did not answer within {wait:g} s",
            headers={"Retry-After": PROVIDER_RETRY_AFTER, **headers},
        )
    assert isinstance(cached, bytes)
    return Response(content=cached, media_type=provider.content_type, headers=headers)


async def _dispatch_unless_cached(
    ctx: AppContext, key: str, full_name: str, digest: str, canonical: str
) -> bytes | None:
    """Take the in-flight lock and emit one ``provider_request``, unless a result is cached.

    The cache is read again once the lock is taken: an upload between the reader's miss and
    its lock released the lock after storing, so without this second look the reader would
    take the free lock and ask the provider a second time.
    """
    backend = ctx.result_backend
    lock = inflight_key(full_name, digest)
    ttl = ctx.settings.provider_inflight_ttl_seconds
    if not await _backend(backend.acquire_inflight(lock, ttl)):
        return None
    cached = await _backend(backend.get(key))
    if cached is not None:
        await _backend(backend.release_inflight(lock))
        return cached
    # Asked anew: a problem the provider reported for an earlier request is stale.
    await _backend(backend.delete(error_key(full_name, digest)))
    outbox = Outbox()
    outbox.emit(
        ProviderRequest(request_id=digest, provider_name=full_name, params=canonical),
        providers_channel(full_name),
    )
    await ctx.dispatch(outbox)
    return None


async def _wait_result_or_problem(
    backend: ResultBackend, key: str, problem_key: str, wait: float
) -> tuple[bytes | None, bytes | None]:
    """``(result, None)``, ``(None, problem detail)``, or ``(None, None)`` after ``wait`` s."""
    result = asyncio.ensure_future(backend.wait_for_key(key, wait))
    problem = asyncio.ensure_future(backend.wait_for_key(problem_key, wait))
    try:
        done, _ = await asyncio.wait({result, problem}, return_when=asyncio.FIRST_COMPLETED)
        # Both wait as long: whichever ends first with nothing has timed out for both.
        if result in done and result.result() is not None:
            return result.result(), None
        if problem in done and problem.result() is not None:
            return None, problem.result()
        return None, None
    finally:
        for waiter in (result, problem):
            waiter.cancel()
        await asyncio.gather(result, problem, return_exceptions=True)


def _problem_detail(data: bytes) -> str:
    """The ``detail`` of an uploaded problem+json body, or 422 (413 if it is too long)."""
    if len(data) > PROVIDER_PROBLEM_MAX_BYTES:
        raise too_large_problem(PROVIDER_PROBLEM_MAX_BYTES)
    try:
        problem = json.loads(data)
    except ValueError as exc:
        raise ProblemError(
            422, "validation-error", "A problem+json upload must be a JSON object"
        ) from exc
    detail = problem.get("detail") if isinstance(problem, dict) else None
    if not isinstance(detail, str):
        raise ProblemError(422, "validation-error", "A problem+json upload needs a string 'detail'")
    return detail[:PROVIDER_ERROR_DETAIL_MAX]


async def _fail_readers(ctx: AppContext, provider: Row, digest: str, detail: str) -> None:
    """Hand a provider's problem to every reader waiting for ``digest``, cache nothing."""
    backend = ctx.result_backend
    problem_key = error_key(provider.full_name, digest)
    await _backend(backend.store(problem_key, detail.encode(), PROVIDER_ERROR_TTL_SECONDS))
    await _backend(backend.release_inflight(inflight_key(provider.full_name, digest)))
    await _backend(backend.notify_key(problem_key))


async def _owned_provider(ctx: Ctx, principal: CurrentPrincipal, provider_id: str) -> Row:
    if not is_plain_id(provider_id):
        raise provider_not_found(provider_id)
    async with ctx.db.read() as conn:
        row = await providers.get_provider(conn, provider_id)
    if row is None:
        raise provider_not_found(provider_id)
    if row.user_id != principal.id and not principal.is_superuser:
        raise forbidden("Only the provider's owner or a superuser may do this")
    return row


async def check_pending_request(ctx: AppContext, provider: Row, digest: str) -> None:
    """``409 provider-request-not-pending`` unless a read of ``provider`` with this request
    hash is in flight: the server asked for it (``provider_request``) and still waits.

    So an owner can store only what readers asked for, once per request, not results
    under any number of made-up hashes.
    """
    lock = inflight_key(provider.full_name, digest)
    if await _backend(ctx.result_backend.get(lock)) is None:
        raise ProblemError(
            409,
            "provider-request-not-pending",
            f"No read of provider '{provider.full_name}' with request hash {digest} is "
            "waiting for a result (it was answered already, or never asked for, or its "
            "in-flight time ran out)",
        )


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
    provider = await _owned_provider(ctx, principal, provider_id)
    if x_request_hash is None or not _HASH.match(x_request_hash):
        raise ProblemError(422, "validation-error", "X-Request-Hash must be a SHA-256 hex digest")
    await check_pending_request(ctx, provider, x_request_hash)
    data = await request.body()
    if _is_problem(request.headers.get("content-type")):
        await _fail_readers(ctx, provider, x_request_hash, _problem_detail(data))
        return Response(status_code=204)
    backend = ctx.result_backend
    key = result_key(provider.full_name, x_request_hash)
    try:
        await _backend(backend.store(key, data, ctx.settings.provider_result_ttl_seconds))
    except ResultTooLargeError as exc:
        raise ProblemError(413, "content-too-large", f"The result is too large: {exc}") from exc
    await _backend(backend.release_inflight(inflight_key(provider.full_name, x_request_hash)))
    await _backend(backend.notify_key(key))
    outbox = Outbox()
    outbox.emit(
        ProviderResultReady(provider_name=provider.full_name, request_hash=x_request_hash),
        room_channel(provider.room_id),
    )
    await ctx.dispatch(outbox)
    return Response(status_code=204)


def _is_problem(content_type: str | None) -> bool:
    """Whether an upload is the provider's problem rather than a result."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/problem+json"


@router.delete(
    "/providers/{provider_id}",
    status_code=204,
    summary="Delete a provider",
    responses=problems(403, 404),
)
async def delete_provider(provider_id: str, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    await _owned_provider(ctx, principal, provider_id)
    async with ctx.db.write() as conn:
        removed = await providers.delete_provider(conn, provider_id)
    if removed is not None:
        forget_providers(ctx, [removed.full_name])
        outbox = Outbox()
        outbox.emit(ProvidersInvalidate(), room_channel(removed.room_id))
        await ctx.dispatch(outbox)
    return Response(status_code=204)
