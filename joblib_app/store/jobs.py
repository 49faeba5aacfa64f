"""Job rows and their links to workers."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, select, update

from joblib_app.domain.names import INTERNAL_ROOM
from joblib_app.models import job_table, link_table, task_table
from joblib_app.store.connection import Connection, Row
from joblib_app.store.task_columns import IS_PENDING

_J = job_table.c
_JOB_COLUMNS = (_J.id, _J.room_id, _J.category, _J.name, _J.full_name, _J.schema, _J.is_deleted)
_GET_JOB = select(*_JOB_COLUMNS).where(_J.full_name == bindparam("full_name"))


async def get_job(conn: Connection, full_name: str) -> Row | None:
    """The job row by full name, soft-deleted or not."""
    return (await conn.execute(_GET_JOB, {"full_name": full_name})).first()


async def insert_job(
    conn: Connection,
    *,
    room_id: str,
    category: str,
    name: str,
    full_name: str,
    schema: dict[str, Any],
    now: datetime,
) -> Row | None:
    """Insert a job; ``None`` when another request inserted the same full name first."""
    stmt = (
        conn.rules.insert_ignoring_conflicts(job_table)
        .values(
            id=str(uuid.uuid4()),
            room_id=room_id,
            category=category,
            name=name,
            full_name=full_name,
            schema=schema,
            is_deleted=False,
            created_at=now,
            updated_at=now,
        )
        .returning(*_JOB_COLUMNS)
    )
    return (await conn.execute(stmt)).first()


async def reactivate_job(
    conn: Connection, job_id: str, schema: dict[str, Any], now: datetime
) -> Row:
    stmt = (
        update(job_table)
        .where(_J.id == job_id)
        .values(is_deleted=False, schema=schema, updated_at=now)
        .returning(*_JOB_COLUMNS)
    )
    return (await conn.execute(stmt)).one()


async def link_worker(conn: Connection, worker_id: str, job_id: str) -> bool:
    """Link a worker to a job; ``True`` when the link is new."""
    stmt = conn.rules.insert_ignoring_conflicts(link_table).values(
        worker_id=worker_id, job_id=job_id
    )
    return (await conn.execute(stmt)).rowcount == 1


async def workers_of_jobs(conn: Connection, job_ids: Collection[str]) -> dict[str, list[str]]:
    """Worker ids per job id, in one query."""
    result: dict[str, list[str]] = defaultdict(list)
    if not job_ids:
        return result
    stmt = (
        select(link_table.c.job_id, link_table.c.worker_id)
        .where(link_table.c.job_id.in_(job_ids))
        .order_by(link_table.c.worker_id)
    )
    for job_id, worker_id in await conn.execute(stmt):
        result[job_id].append(worker_id)
    return result


async def jobs_of_workers(conn: Connection, worker_ids: Collection[str]) -> list[Row]:
    """``(id, room_id, full_name)`` of every job the workers serve."""
    stmt = select(_J.id, _J.room_id, _J.full_name).where(
        _J.id.in_(select(link_table.c.job_id).where(link_table.c.worker_id.in_(worker_ids)))
    )
    return list((await conn.execute(stmt)).all())


async def job_names_of_worker(conn: Connection, worker_id: str) -> list[str]:
    stmt = (
        select(_J.full_name)
        .join(link_table, link_table.c.job_id == _J.id)
        .where(link_table.c.worker_id == worker_id)
    )
    return list((await conn.execute(stmt)).scalars())


async def list_jobs(
    conn: Connection, rooms: Collection[str], *, limit: int, offset: int
) -> tuple[Sequence[Row], int]:
    where = and_(_J.room_id.in_(rooms), _J.is_deleted.is_(False))
    total = (
        await conn.execute(select(func.count()).select_from(job_table).where(where))
    ).scalar_one()
    stmt = select(*_JOB_COLUMNS).where(where).order_by(_J.seq.desc()).limit(limit).offset(offset)
    return (await conn.execute(stmt)).all(), total


async def soft_delete_orphans(conn: Connection, job_ids: Collection[str]) -> list[Row]:
    """Soft-delete the given jobs that have no worker and no pending task (never ``@internal``).

    Returns the ``(full_name, room_id)`` of each job soft-deleted.
    """
    if not job_ids:
        return []
    has_worker = exists().where(link_table.c.job_id == _J.id)
    has_pending = exists().where(and_(task_table.c.job_id == _J.id, IS_PENDING))
    stmt = (
        update(job_table)
        .where(
            _J.id.in_(job_ids),
            _J.is_deleted.is_(False),
            _J.room_id != INTERNAL_ROOM,
            ~has_worker,
            ~has_pending,
        )
        .values(is_deleted=True)
        .returning(_J.full_name, _J.room_id)
    )
    return list((await conn.execute(stmt)).all())


_JOB_OF_TASK = select(task_table.c.job_id).where(task_table.c.id == bindparam("task_id"))
_LOCK_JOB_OF_TASK = select(_J.id).where(_J.id == _JOB_OF_TASK.scalar_subquery()).with_for_update()


async def lock_job_of_task(conn: Connection, task_id: str) -> None:
    """Hold the row lock of the task's job until the transaction ends (PostgreSQL).

    Taken before a task leaves pending, and by the worker cleanup before it unlinks
    workers, so that whichever commits second sees what the first did and soft-deletes
    the job left with no worker and no pending task; under READ COMMITTED each alone could
    see the other's change not yet committed, and neither would. SQLite writes one at a
    time and has no ``FOR UPDATE``.
    """
    if conn.rules.takes_row_locks:
        await conn.execute(_LOCK_JOB_OF_TASK, {"task_id": task_id})


async def lock_jobs(conn: Connection, job_ids: Collection[str]) -> None:
    """Hold the row locks of the jobs until the transaction ends (PostgreSQL), in id order
    so that concurrent lockers never deadlock; see :func:`lock_job_of_task`."""
    if job_ids and conn.rules.takes_row_locks:
        stmt = select(_J.id).where(_J.id.in_(job_ids)).order_by(_J.id).with_for_update()
        await conn.execute(stmt)
