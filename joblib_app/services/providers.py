"""Providers: registration, listing, reading one's registration, deletion.

Reads through a provider and result uploads are :mod:`joblib_app.services.provider_reads`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from joblib_app.context import AppContext
from joblib_app.domain.errors import Forbidden
from joblib_app.domain.names import make_full_name, provider_rooms, validate_room_id
from joblib_app.limits import check_json_body
from joblib_app.models import utcnow
from joblib_app.principal import Principal
from joblib_app.realtime.events import Outbox, ProvidersInvalidate, room_channel
from joblib_app.services.access import (
    check_category,
    check_readable_room,
    check_reserved_room,
    is_owner,
    owned_provider,
    owned_worker_or_new,
)
from joblib_app.services.provider_rows import forget_providers, visible_provider
from joblib_app.services.rows import Record
from joblib_app.store import providers


@dataclass(frozen=True, slots=True)
class ProviderRegistration:
    """The outcome of :func:`register_provider`."""

    provider: Record
    # ``False``: it existed and was updated (``200``).
    created: bool


async def register_provider(
    ctx: AppContext,
    principal: Principal,
    room_id: str,
    *,
    category: str,
    name: str,
    schema: dict[str, Any],
    content_type: str,
    worker_id: str | None,
) -> ProviderRegistration:
    """Register a provider, or update the caller's own (a superuser may take over any)."""
    validate_room_id(room_id)
    check_reserved_room(principal, room_id, "providers")
    check_json_body(schema, ctx.settings.max_json_depth, "schema")
    check_category(category, ctx.settings.allowed_provider_categories)
    full_name = make_full_name(room_id, category, name)
    now = utcnow()
    created = True
    async with ctx.db.write() as conn:
        worker_id = await owned_worker_or_new(conn, principal, worker_id, now)
        row = await providers.insert_provider(
            conn,
            now=now,
            room_id=room_id,
            category=category,
            name=name,
            full_name=full_name,
            schema=schema,
            content_type=content_type,
            user_id=principal.id,
            worker_id=worker_id,
        )
        if row is None:
            existing = await providers.get_provider_by_name(conn, full_name)
            assert existing is not None  # the insert conflicted on this very name
            if not is_owner(principal, existing.user_id, superuser_may=True):
                raise Forbidden(f"Provider '{full_name}' belongs to another user")
            # A superuser's overwrite makes the provider theirs: its worker is theirs now.
            row = await providers.update_provider(
                conn,
                existing.id,
                schema=schema,
                content_type=content_type,
                worker_id=worker_id,
                user_id=principal.id,
            )
            created = False
    forget_providers(ctx, [full_name])
    outbox = Outbox()
    outbox.emit(ProvidersInvalidate(), room_channel(room_id))
    await ctx.dispatch(outbox)
    return ProviderRegistration(provider=row, created=created)


async def list_providers(
    ctx: AppContext, principal: Principal, room_id: str, *, limit: int, offset: int
) -> tuple[list[Record], int]:
    """The providers visible from ``room_id``, and their total."""
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        rows, total = await providers.list_providers(
            conn, provider_rooms(room_id), limit=limit, offset=offset
        )
    return list(rows), total


async def provider_info(
    ctx: AppContext, principal: Principal, room_id: str, full_name: str
) -> Record:
    """A provider's registration, if visible from ``room_id`` and readable."""
    row = await visible_provider(ctx, room_id, full_name)
    await check_readable_room(ctx, principal, room_id)
    return row


async def delete_provider(ctx: AppContext, principal: Principal, provider_id: str) -> None:
    """Delete a provider (its owner's, or any for a superuser)."""
    await owned_provider(ctx, principal, provider_id)
    async with ctx.db.write() as conn:
        removed = await providers.delete_provider(conn, provider_id)
    if removed is not None:
        forget_providers(ctx, [removed.full_name])
        outbox = Outbox()
        outbox.emit(ProvidersInvalidate(), room_channel(removed.room_id))
        await ctx.dispatch(outbox)
