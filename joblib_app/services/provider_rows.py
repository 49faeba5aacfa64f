"""Provider rows as the read path sees them, with a short per-process cache."""

from __future__ import annotations

import time
from collections.abc import Iterable

from joblib_app.context import AppContext
from joblib_app.domain.errors import ProviderNotFound
from joblib_app.domain.names import validate_room_id
from joblib_app.services.access import check_visible_provider_name
from joblib_app.services.rows import Record
from joblib_app.store import providers

# How long a read may serve a cached result using a provider row looked up earlier. Bounds
# how late a cache hit notices a provider deleted or re-registered by another process; this
# process forgets its own changes at once, and a cache miss always reads the row afresh.
ROW_CACHE_SECONDS = 1.0
_ROW_CACHE = "providers.row_cache"
_ROW_CACHE_MAX = 10_000


def _row_cache(ctx: AppContext) -> dict[str, tuple[Record, float]]:
    """Provider rows recently read by the read path: ``full_name -> (row, expires_at)``."""
    cache: dict[str, tuple[Record, float]] = ctx.extras.setdefault(_ROW_CACHE, {})
    return cache


def forget_providers(ctx: AppContext, full_names: Iterable[str]) -> None:
    """Drop providers' cached rows after this process changed or deleted them."""
    cache = _row_cache(ctx)
    for full_name in full_names:
        cache.pop(full_name, None)


def _check_visible(room_id: str, full_name: str) -> None:
    """400 for a bad room id; 404 unless ``full_name`` names a provider of a visible room."""
    validate_room_id(room_id)
    check_visible_provider_name(room_id, full_name)


async def visible_provider(ctx: AppContext, room_id: str, full_name: str) -> Record:
    """The provider ``full_name`` if it exists and is visible from ``room_id``, else 404."""
    _check_visible(room_id, full_name)
    async with ctx.db.read() as conn:
        row = await providers.get_provider_by_name(conn, full_name)
    cache = _row_cache(ctx)
    if row is None:
        cache.pop(full_name, None)
        raise ProviderNotFound(full_name)
    if len(cache) >= _ROW_CACHE_MAX:
        cache.clear()
    cache[full_name] = (row, time.monotonic() + ROW_CACHE_SECONDS)
    return row


async def recent_provider(ctx: AppContext, room_id: str, full_name: str) -> tuple[Record, bool]:
    """Like :func:`visible_provider`, but a row read within ``ROW_CACHE_SECONDS`` will do.

    Saves a database round trip per cache hit, the read path's hottest case. The second
    value says whether the row came from the database just now.
    """
    entry = _row_cache(ctx).get(full_name)
    if entry is not None and entry[1] > time.monotonic():
        _check_visible(room_id, full_name)
        return entry[0], False
    return await visible_provider(ctx, room_id, full_name), True
