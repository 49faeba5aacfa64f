"""Worker rows: creation, heartbeat, listing, deletion."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, and_, bindparam, delete, func, select, update

from joblib_app.models import job_table, link_table, worker_table
from joblib_app.store.connection import Connection, Row

_W = worker_table.c
_GET_WORKER = select(_W.id, _W.user_id, _W.last_heartbeat).where(_W.id == bindparam("worker_id"))


async def create_worker(conn: Connection, user_id: str, now: datetime) -> Row:
    stmt = (
        worker_table.insert()
        .values(id=str(uuid.uuid4()), user_id=user_id, last_heartbeat=now, created_at=now)
        .returning(_W.id, _W.user_id, _W.last_heartbeat)
    )
    return (await conn.execute(stmt)).one()


async def get_worker(conn: Connection, worker_id: str) -> Row | None:
    return (await conn.execute(_GET_WORKER, {"worker_id": worker_id})).first()


# The heartbeat: built once, like the other statements of the hot path.
_TOUCH_WORKER = (
    update(worker_table)
    .where(_W.id == bindparam("worker_id"))
    .values(last_heartbeat=bindparam("now", type_=worker_table.c.last_heartbeat.type))
    .returning(_W.id, _W.user_id, _W.last_heartbeat)
)


async def touch_worker(conn: Connection, worker_id: str, now: datetime) -> Row | None:
    params = {"worker_id": worker_id, "now": now}
    return (await conn.execute(_TOUCH_WORKER, params)).first()


def _job_count() -> ScalarSelect[Any]:
    return (
        select(func.count())
        .select_from(link_table)
        .where(link_table.c.worker_id == _W.id)
        .scalar_subquery()
    )


async def list_workers(conn: Connection, *, limit: int, offset: int) -> tuple[Sequence[Row], int]:
    total = (await conn.execute(select(func.count()).select_from(worker_table))).scalar_one()
    stmt = (
        select(_W.id, _W.last_heartbeat, _job_count().label("job_count"))
        .order_by(_W.created_at.desc(), _W.id)
        .limit(limit)
        .offset(offset)
    )
    return (await conn.execute(stmt)).all(), total


async def list_workers_in_rooms(
    conn: Connection, rooms: Collection[str], *, limit: int, offset: int
) -> tuple[Sequence[Row], int]:
    """Workers serving at least one active job whose room is in ``rooms``."""
    serving = (
        select(link_table.c.worker_id)
        .join(job_table, job_table.c.id == link_table.c.job_id)
        .where(and_(job_table.c.room_id.in_(rooms), job_table.c.is_deleted.is_(False)))
    )
    where = _W.id.in_(serving)
    total = (
        await conn.execute(select(func.count()).select_from(worker_table).where(where))
    ).scalar_one()
    stmt = (
        select(_W.id, _W.last_heartbeat, _job_count().label("job_count"))
        .where(where)
        .order_by(_W.created_at.desc(), _W.id)
        .limit(limit)
        .offset(offset)
    )
    return (await conn.execute(stmt)).all(), total


async def stale_worker_ids(conn: Connection, cutoff: datetime) -> list[str]:
    stmt = select(_W.id).where(_W.last_heartbeat < cutoff)
    return list((await conn.execute(stmt)).scalars())


async def lock_stale_workers(
    conn: Connection, worker_ids: Collection[str], cutoff: datetime
) -> list[str]:
    """Those of ``worker_ids`` whose heartbeat is still older than ``cutoff``, row-locked
    until the transaction ends (PostgreSQL; SQLite writers are already one at a time), so a
    heartbeat racing their cleanup waits for it and then finds the worker gone."""
    stmt = conn.rules.for_update(
        select(_W.id).where(_W.id.in_(worker_ids), _W.last_heartbeat < cutoff)
    )
    return list((await conn.execute(stmt)).scalars())


async def delete_workers(conn: Connection, worker_ids: Collection[str]) -> list[str]:
    """Delete worker rows and their job links; return the ids that existed."""
    await conn.execute(delete(link_table).where(link_table.c.worker_id.in_(worker_ids)))
    stmt = delete(worker_table).where(_W.id.in_(worker_ids)).returning(_W.id)
    return list((await conn.execute(stmt)).scalars())
