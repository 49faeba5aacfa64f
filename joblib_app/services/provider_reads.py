"""Reads through a provider (cached, coalesced, long-polled) and the provider's uploads.

A read answers a cached result at once; otherwise one ``provider_request`` goes out for
any number of identical concurrent reads (an in-flight lock per request hash), and each
reader waits for the upload, or for the provider's problem.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from joblib_app.context import AppContext
from joblib_app.domain.errors import (
    BodyTooLarge,
    ContentTooLarge,
    InvalidInput,
    ProviderBackendUnavailable,
    ProviderFailed,
    ProviderRequestNotPending,
    ProviderTimeout,
)
from joblib_app.domain.prefer import preference_applied
from joblib_app.principal import Principal
from joblib_app.providers.backend import (
    ResultBackend,
    ResultBackendUnavailable,
    ResultTooLargeError,
)
from joblib_app.realtime.events import (
    Outbox,
    ProviderRequest,
    ProviderResultReady,
    providers_channel,
    room_channel,
)
from joblib_app.services.access import check_readable_room, owned_provider
from joblib_app.services.provider_rows import recent_provider, visible_provider
from joblib_app.services.rows import Record
from joblib_app.services.stopping import Stopping, until_stopping

T = TypeVar("T")
_HASH = re.compile(r"^[0-9a-f]{64}$")
PROVIDER_RETRY_AFTER = "2"
# A provider's problem outlives its upload only long enough for the readers it wakes to
# read it (the backend's smallest TTL); the next read of the same key dispatches anew.
PROVIDER_ERROR_TTL_SECONDS = 1
PROVIDER_ERROR_DETAIL_MAX = 2000
# A problem is a short JSON object, not a result: its upload is bounded far below one.
PROVIDER_PROBLEM_MAX_BYTES = 65_536


def request_hash(params: Mapping[str, str]) -> tuple[str, str]:
    """The canonical JSON of read parameters and its SHA-256 hex digest."""
    canonical = json.dumps(dict(params), sort_keys=True, separators=(",", ":"))
    return canonical, hashlib.sha256(canonical.encode()).hexdigest()


def result_key(full_name: str, digest: str) -> str:
    """Where a read's result is cached."""
    return f"provider-result:{full_name}:{digest}"


def inflight_key(full_name: str, digest: str) -> str:
    """The lock held while one read's ``provider_request`` waits for its upload."""
    return f"provider-inflight:{full_name}:{digest}"


def error_key(full_name: str, digest: str) -> str:
    """Where a provider's problem waits for the readers of one read; never a cache."""
    return f"provider-error:{full_name}:{digest}"


async def _backend(operation: Awaitable[T]) -> T:
    """Run a result-backend call; an unreachable backend is ``503``."""
    try:
        return await operation
    except ResultBackendUnavailable as exc:
        raise ProviderBackendUnavailable(
            f"The provider result backend is unavailable: {exc}",
            headers={"Retry-After": PROVIDER_RETRY_AFTER},
        ) from exc


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """A read's answer: the provider's bytes, in its content type."""

    content: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


async def read_provider(
    ctx: AppContext,
    principal: Principal,
    room_id: str,
    full_name: str,
    params: Mapping[str, str],
    asked_wait: float | None,
) -> ProviderAnswer:
    """Read through the provider: cached result at once, else one ``provider_request`` for
    any number of identical concurrent reads, then wait (``asked_wait`` seconds, else the
    default) for the upload."""
    provider, fresh = await recent_provider(ctx, room_id, full_name)
    await check_readable_room(ctx, principal, room_id)
    settings = ctx.settings
    backend = ctx.result_backend
    canonical, digest = request_hash(params)
    key = result_key(full_name, digest)
    headers: dict[str, str] = {}
    cached = await _backend(backend.get(key))
    if cached is None:
        if not fresh:
            # A miss asks the provider: make sure it still exists and has this content type.
            provider = await visible_provider(ctx, room_id, full_name)
        cached = await _dispatch_unless_cached(ctx, key, full_name, digest, canonical)
    if cached is None:
        wait = settings.provider_long_poll_default_seconds if asked_wait is None else asked_wait
        wait = min(wait, settings.provider_long_poll_max_seconds)
        if asked_wait is not None:
            headers["Preference-Applied"] = preference_applied(wait)
        retry = {"Retry-After": PROVIDER_RETRY_AFTER, **headers}
        outcome = await until_stopping(
            ctx,
            _backend(_wait_result_or_problem(backend, key, error_key(full_name, digest), wait)),
        )
        if isinstance(outcome, Stopping):
            raise ProviderTimeout(
                f"Provider '{full_name}' did not answer before the server began shutting down",
                headers=retry,
            )
        cached, problem = outcome
        if problem is not None:
            raise ProviderFailed(problem.decode(errors="replace"), headers=retry)
        if cached is None:
            raise ProviderTimeout(
                f"Provider '{full_name}' did not answer within {wait:g} s", headers=retry
            )
    return ProviderAnswer(cached, provider.content_type, headers)


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
        raise BodyTooLarge(PROVIDER_PROBLEM_MAX_BYTES)
    try:
        problem = json.loads(data)
    except ValueError as exc:
        raise InvalidInput("A problem+json upload must be a JSON object") from exc
    detail = problem.get("detail") if isinstance(problem, dict) else None
    if not isinstance(detail, str):
        raise InvalidInput("A problem+json upload needs a string 'detail'")
    return detail[:PROVIDER_ERROR_DETAIL_MAX]


async def _fail_readers(ctx: AppContext, provider: Record, digest: str, detail: str) -> None:
    """Hand a provider's problem to every reader waiting for ``digest``, cache nothing."""
    backend = ctx.result_backend
    problem_key = error_key(provider.full_name, digest)
    await _backend(backend.store(problem_key, detail.encode(), PROVIDER_ERROR_TTL_SECONDS))
    await _backend(backend.release_inflight(inflight_key(provider.full_name, digest)))
    await _backend(backend.notify_key(problem_key))


async def check_pending_request(ctx: AppContext, provider: Record, digest: str) -> None:
    """``409 provider-request-not-pending`` unless a read of ``provider`` with this request
    hash is in flight: the server asked for it (``provider_request``) and still waits.

    So an owner can store only what readers asked for, once per request, not results
    under any number of made-up hashes.
    """
    lock = inflight_key(provider.full_name, digest)
    if await _backend(ctx.result_backend.get(lock)) is None:
        raise ProviderRequestNotPending(
            f"No read of provider '{provider.full_name}' with request hash {digest} is "
            "waiting for a result (it was answered already, or never asked for, or its "
            "in-flight time ran out)"
        )


def is_problem_upload(content_type: str | None) -> bool:
    """Whether an upload is the provider's problem rather than a result."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/problem+json"


async def upload_result(
    ctx: AppContext,
    principal: Principal,
    provider_id: str,
    digest: str | None,
    content_type: str | None,
    read_body: Callable[[], Awaitable[bytes]],
) -> None:
    """Store a read's result byte for byte, release its in-flight lock, wake the readers;
    or, for a problem+json upload, hand its ``detail`` to the readers and cache nothing.

    The provider and the caller are checked before the hash, as the reference does: its
    worker SDK stops serving on the ``404`` of a provider that is gone. The body is read
    (``read_body``) only once all of that passed.
    """
    provider = await owned_provider(ctx, principal, provider_id)
    if digest is None or not _HASH.match(digest):
        raise InvalidInput("X-Request-Hash must be a SHA-256 hex digest")
    await check_pending_request(ctx, provider, digest)
    data = await read_body()
    if is_problem_upload(content_type):
        await _fail_readers(ctx, provider, digest, _problem_detail(data))
        return
    backend = ctx.result_backend
    key = result_key(provider.full_name, digest)
    try:
        await _backend(backend.store(key, data, ctx.settings.provider_result_ttl_seconds))
    except ResultTooLargeError as exc:
        raise ContentTooLarge(f"The result is too large: {exc}") from exc
    await _backend(backend.release_inflight(inflight_key(provider.full_name, digest)))
    await _backend(backend.notify_key(key))
    outbox = Outbox()
    outbox.emit(
        ProviderResultReady(provider_name=provider.full_name, request_hash=digest),
        room_channel(provider.room_id),
    )
    await ctx.dispatch(outbox)
