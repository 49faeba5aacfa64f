"""Task rows: submit, claim, transitions, queue position, listing."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from joblib_app.models import ACTIVE_STATUSES, TaskStatus, link_table, task_table, worker_table
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
# Partial indexes serve a query only when the planner can see that its condition implies the
# index's (``status = 'pending'``). PostgreSQL's generic plans, which prepared statements
# settle on, do not know bound values: with ``status = $1`` the claim would scan every task
# of the job, finished ones included. Inlining the literal keeps the index usable everywhere.
IS_PENDING = _T.status == literal_column("'pending'")
IS_ACTIVE = _T.status.in_([literal_column(f"'{s}'") for s in ACTIVE_STATUSES])

# The hot path's statements are built once: building a Core statement and its cache key
# on every call costs more than running it on SQLite.
_GET_TASK = select(*TASK_COLUMNS).where(_T.id == bindparam("task_id"))
_GET_TASK_WITH_OWNER = (
    select(*TASK_COLUMNS, worker_table.c.user_id.label("worker_user_id"))
    .select_from(task_table.outerjoin(worker_table, worker_table.c.id == _T.worker_id))
    .where(_T.id == bindparam("task_id"))
)


def _claim_statement(dialect: str) -> Any:
    candidate = (
        select(_T.seq)
        .where(
            IS_PENDING,
            _T.job_id.in_(
                select(link_table.c.job_id).where(link_table.c.worker_id == bindparam("worker_id"))
            ),
        )
        .order_by(_T.seq)
        .limit(1)
    )
    if dialect == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True)
    return (
        update(task_table)
        .where(_T.seq == candidate.scalar_subquery(), IS_PENDING)
        .values(status=TaskStatus.CLAIMED.value, worker_id=bindparam("worker_id"))
        .returning(*TASK_COLUMNS)
    )


_CLAIM = {"postgresql": _claim_statement("postgresql"), "other": _claim_statement("other")}
_INSERT_TASK = task_table.insert().returning(*TASK_COLUMNS)
_TRANSITIONS: dict[tuple[TaskStatus, bool], Any] = {}


def _transition_statement(to_status: TaskStatus, with_error: bool) -> Any:
    """``UPDATE`` of one task from a given status, built once per (target, error) pair."""
    key = (to_status, with_error)
    stmt = _TRANSITIONS.get(key)
    if stmt is None:
        values: dict[str, Any] = {"status": to_status.value}
        if to_status is TaskStatus.RUNNING:
            values["started_at"] = bindparam("now")
        if to_status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
            values["completed_at"] = bindparam("now")
        if with_error:
            values["error"] = bindparam("error")
        stmt = (
            update(task_table)
            .where(_T.id == bindparam("task_id"), _T.status == bindparam("from_status"))
            .values(**values)
            .returning(*TASK_COLUMNS)
        )
        _TRANSITIONS[key] = stmt
    return stmt


def _queue_positions_statement() -> Any:
    ahead = task_table.alias("ahead")
    position = (
        select(func.count())
        .select_from(ahead)
        .where(
            ahead.c.job_id == _T.job_id,
            ahead.c.status == literal_column("'pending'"),
            ahead.c.seq <= _T.seq,
        )
        .scalar_subquery()
    )
    return select(_T.seq, position).where(_T.seq.in_(bindparam("seqs", expanding=True)))


_QUEUE_POSITIONS = _queue_positions_statement()


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
    params = {
        "id": str(uuid.uuid4()),
        "job_id": job_id,
        "job_name": job_name,
        "room_id": room_id,
        "status": _PENDING,
        "created_by": created_by,
        "payload": payload,
        "created_at": now,
    }
    return (await conn.execute(_INSERT_TASK, params)).one()


async def get_task(conn: AsyncConnection, task_id: str) -> Row | None:
    return (await conn.execute(_GET_TASK, {"task_id": task_id})).first()


async def get_task_with_owner(conn: AsyncConnection, task_id: str) -> Row | None:
    """The task row plus ``worker_user_id``, the owner of its claiming worker (or ``None``)."""
    return (await conn.execute(_GET_TASK_WITH_OWNER, {"task_id": task_id})).first()


async def claim_next(conn: AsyncConnection, worker_id: str) -> Row | None:
    """Claim the oldest pending task among the worker's jobs, in one statement.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` makes concurrent claimers take different rows
    instead of racing for one; SQLite runs one writer at a time and ignores the clause.
    """
    stmt = _CLAIM["postgresql" if conn.dialect.name == "postgresql" else "other"]
    return (await conn.execute(stmt, {"worker_id": worker_id})).first()


async def mark_claimed(conn: AsyncConnection, task_id: str) -> Row | None:
    """Move one pending task to claimed with no worker (``@internal`` dispatch)."""
    stmt = (
        update(task_table)
        .where(_T.id == task_id, IS_PENDING)
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
    stmt = _transition_statement(to_status, error is not None)
    params = {"task_id": task_id, "from_status": from_status, "now": now, "error": error}
    return (await conn.execute(stmt, params)).first()


async def fail_active_tasks(
    conn: AsyncConnection, where: ColumnElement[bool], error: str, now: datetime
) -> list[Row]:
    """Fail every claimed or running task matching ``where``; return the rows changed.

    The status condition makes this safe to run from several sweepers at once: a task
    fails once, whoever gets there first.
    """
    stmt = (
        update(task_table)
        .where(IS_ACTIVE, where)
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
    result = await conn.execute(_QUEUE_POSITIONS, {"seqs": pending})
    return {seq: count for seq, count in result}


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
    stmt = select(*TASK_COLUMNS).where(where).order_by(_T.seq.desc()).limit(limit).offset(offset)
    return (await conn.execute(stmt)).all(), total
