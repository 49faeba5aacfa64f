"""Task rows: submit, claim, transitions, queue position, listing."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from joblib_app.models import ACTIVE_STATUSES, TaskStatus, link_table, task_table
from joblib_app.names import INTERNAL_ROOM

_T = task_table.c
TASK_COLUMNS = (
    _T.seq,
    _T.id,
    _T.job_id,
    _T.job_name,
    _T.room_id,
    _T.status,
    _T.worker_id,
    _T.error,
    _T.payload,
    _T.created_by,
    _T.created_at,
    _T.started_at,
    _T.completed_at,
)
_PENDING = TaskStatus.PENDING.value


async def insert_task(
    conn: AsyncConnection,
    *,
    job_id: str,
    job_name: str,
    room_id: str,
    payload: dict[str, Any],
    created_by: str,
    now: datetime,
) -> Row:
    stmt = (
        task_table.insert()
        .values(
            id=str(uuid.uuid4()),
            job_id=job_id,
            job_name=job_name,
            room_id=room_id,
            status=_PENDING,
            created_by=created_by,
            payload=payload,
            created_at=now,
        )
        .returning(*TASK_COLUMNS)
    )
    return (await conn.execute(stmt)).one()


async def get_task(conn: AsyncConnection, task_id: str) -> Row | None:
    stmt = select(*TASK_COLUMNS).where(_T.id == task_id)
    return (await conn.execute(stmt)).first()


async def claim_next(conn: AsyncConnection, worker_id: str) -> Row | None:
    """Claim the oldest pending task among the worker's jobs, in one statement.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` makes concurrent claimers take different rows
    instead of racing for one; SQLite runs one writer at a time and ignores the clause.
    """
    candidate = (
        select(_T.seq)
        .where(
            _T.status == _PENDING,
            _T.job_id.in_(
                select(link_table.c.job_id).where(link_table.c.worker_id == worker_id)
            ),
        )
        .order_by(_T.seq)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True)
    stmt = (
        update(task_table)
        .where(_T.seq == candidate.scalar_subquery(), _T.status == _PENDING)
        .values(status=TaskStatus.CLAIMED.value, worker_id=worker_id)
        .returning(*TASK_COLUMNS)
    )
    return (await conn.execute(stmt)).first()


async def mark_claimed(conn: AsyncConnection, task_id: str) -> Row | None:
    """Move one pending task to claimed with no worker (``@internal`` dispatch)."""
    stmt = (
        update(task_table)
        .where(_T.id == task_id, _T.status == _PENDING)
        .values(status=TaskStatus.CLAIMED.value)
        .returning(*TASK_COLUMNS)
    )
    return (await conn.execute(stmt)).first()


async def transition(
    conn: AsyncConnection,
    task_id: str,
    *,
    from_status: str,
    to_status: TaskStatus,
    error: str | None,
    now: datetime,
) -> Row | None:
    """Compare-and-set the status; ``None`` when the task is no longer in ``from_status``."""
    values: dict[str, Any] = {"status": to_status.value}
    if to_status is TaskStatus.RUNNING:
        values["started_at"] = now
    if to_status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        values["completed_at"] = now
    if error is not None:
        values["error"] = error
    stmt = (
        update(task_table)
        .where(_T.id == task_id, _T.status == from_status)
        .values(**values)
        .returning(*TASK_COLUMNS)
    )
    return (await conn.execute(stmt)).first()


async def fail_active_tasks(
    conn: AsyncConnection, where: ColumnElement[bool], error: str, now: datetime
) -> list[Row]:
    """Fail every claimed or running task matching ``where``; return the rows changed.

    The status condition makes this safe to run from several sweepers at once: a task
    fails once, whoever gets there first.
    """
    stmt = (
        update(task_table)
        .where(_T.status.in_(ACTIVE_STATUSES), where)
        .values(status=TaskStatus.FAILED.value, error=error, completed_at=now)
        .returning(*TASK_COLUMNS)
    )
    return list((await conn.execute(stmt)).all())


def active_tasks_of_workers(worker_ids: Collection[str]) -> ColumnElement[bool]:
    return _T.worker_id.in_(worker_ids)


def internal_tasks_older_than(cutoff: datetime) -> ColumnElement[bool]:
    """``@internal`` tasks that started (or, never started, were created) before ``cutoff``."""
    return and_(
        _T.job_name.startswith(INTERNAL_ROOM + ":"),
        func.coalesce(_T.started_at, _T.created_at) < cutoff,
    )


async def queue_positions(conn: AsyncConnection, rows: Sequence[Row]) -> dict[int, int]:
    """1-based position of each pending row within its job's queue, in one query.

    Counts pending tasks of the same job that arrived no later, on the partial index of
    pending tasks, so the cost follows the queue ahead of each task, not the table.
    """
    pending = [row.seq for row in rows if row.status == _PENDING]
    if not pending:
        return {}
    ahead = task_table.alias("ahead")
    position = (
        select(func.count())
        .select_from(ahead)
        .where(
            ahead.c.job_id == _T.job_id,
            ahead.c.status == _PENDING,
            ahead.c.seq <= _T.seq,
        )
        .scalar_subquery()
    )
    stmt = select(_T.seq, position).where(_T.seq.in_(pending))
    return {seq: count for seq, count in await conn.execute(stmt)}


async def list_tasks(
    conn: AsyncConnection,
    *,
    room_id: str,
    job_id: str | None = None,
    status: TaskStatus | None = None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Row], int]:
    """A page of a room's tasks, newest first."""
    conditions = [_T.room_id == room_id]
    if job_id is not None:
        conditions.append(_T.job_id == job_id)
    if status is not None:
        conditions.append(_T.status == status.value)
    where = and_(*conditions)
    total = (
        await conn.execute(select(func.count()).select_from(task_table).where(where))
    ).scalar_one()
    stmt = (
        select(*TASK_COLUMNS)
        .where(where)
        .order_by(_T.seq.desc())
        .limit(limit)
        .offset(offset)
    )
    return (await conn.execute(stmt)).all(), total

