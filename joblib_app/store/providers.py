"""Provider rows."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from joblib_app.models import provider_table
from joblib_app.store.connection import Connection, Row

_P = provider_table.c
PROVIDER_COLUMNS = (
    _P.id,
    _P.room_id,
    _P.category,
    _P.name,
    _P.full_name,
    _P.schema,
    _P.content_type,
    _P.user_id,
    _P.worker_id,
    _P.created_at,
)


async def get_provider_by_name(conn: Connection, full_name: str) -> Row | None:
    stmt = select(*PROVIDER_COLUMNS).where(_P.full_name == full_name)
    return (await conn.execute(stmt)).first()


async def get_provider(conn: Connection, provider_id: str) -> Row | None:
    stmt = select(*PROVIDER_COLUMNS).where(_P.id == provider_id)
    return (await conn.execute(stmt)).first()


async def insert_provider(conn: Connection, *, now: datetime, **values: Any) -> Row | None:
    """Insert a provider; ``None`` when the full name exists already."""
    stmt = (
        conn.rules.insert_ignoring_conflicts(provider_table)
        .values(id=str(uuid.uuid4()), created_at=now, **values)
        .returning(*PROVIDER_COLUMNS)
    )
    return (await conn.execute(stmt)).first()


async def update_provider(conn: Connection, provider_id: str, **values: Any) -> Row:
    stmt = (
        update(provider_table)
        .where(_P.id == provider_id)
        .values(**values)
        .returning(*PROVIDER_COLUMNS)
    )
    return (await conn.execute(stmt)).one()


async def list_providers(
    conn: Connection, rooms: Collection[str], *, limit: int, offset: int
) -> tuple[Sequence[Row], int]:
    where = _P.room_id.in_(rooms)
    total = (
        await conn.execute(select(func.count()).select_from(provider_table).where(where))
    ).scalar_one()
    stmt = (
        select(*PROVIDER_COLUMNS).where(where).order_by(_P.seq.desc()).limit(limit).offset(offset)
    )
    return (await conn.execute(stmt)).all(), total


async def delete_provider(conn: Connection, provider_id: str) -> Row | None:
    stmt = delete(provider_table).where(_P.id == provider_id).returning(_P.room_id, _P.full_name)
    return (await conn.execute(stmt)).first()


async def delete_providers_of_workers(conn: Connection, worker_ids: Collection[str]) -> list[Row]:
    """Delete the workers' providers; return ``(room_id, full_name)`` of each."""
    stmt = (
        delete(provider_table)
        .where(_P.worker_id.in_(worker_ids))
        .returning(_P.room_id, _P.full_name)
    )
    return list((await conn.execute(stmt)).all())
