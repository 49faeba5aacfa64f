"""What the sweeper, the leases and the worker cleanup do to tasks: requeue, fail, release."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, false, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from joblib_app.domain.names import INTERNAL_ROOM
from joblib_app.domain.statuses import TaskStatus
from joblib_app.models import UTCDateTime, job_table, task_table
from joblib_app.store.connection import Connection, Row
from joblib_app.store.task_columns import (
    IS_ACTIVE,
    IS_PENDING,
    PENDING,
    TASK_COLUMNS,
    status_is,
)

_T = task_table.c
_PENDING = PENDING


async def mark_claimed(conn: Connection, task_id: str) -> Row | None:
    """Move one pending task to claimed with no worker (``@internal`` dispatch)."""
    stmt = (
        update(task_table)
        .where(_T.id == task_id, IS_PENDING)
        .values(status=TaskStatus.CLAIMED.value, version=_T.version + 1)
        .returning(*TASK_COLUMNS)
    )
    return (await conn.execute(stmt)).first()


async def fail_active_tasks(
    conn: Connection, where: ColumnElement[bool], error: str, now: datetime
) -> list[Row]:
    """Fail every claimed or running task matching ``where``; return the rows changed.

    The status condition makes this safe to run from several sweepers at once: a task
    fails once, whoever gets there first.
    """
    stmt = (
        update(task_table)
        .where(IS_ACTIVE, where)
        .values(
            status=TaskStatus.FAILED.value,
            error=error,
            completed_at=now,
            version=_T.version + 1,
        )
        .returning(*TASK_COLUMNS)
    )
    return list((await conn.execute(stmt)).all())


def active_tasks_of_workers(worker_ids: Collection[str]) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = _T.worker_id.in_(worker_ids)
    return condition


def internal_tasks_older_than(cutoff: datetime) -> ColumnElement[bool]:
    """``@internal`` tasks that started (or, never started, were created) before ``cutoff``."""
    return and_(
        _T.job_name.startswith(INTERNAL_ROOM + ":"),
        func.coalesce(_T.started_at, _T.created_at) < cutoff,
    )


_IS_CLAIMED = status_is(_T.status, TaskStatus.CLAIMED.value)
_UNCLAIM_VALUES = {
    "status": _PENDING,
    "worker_id": None,
    "claimed_at": None,
    "version": _T.version + 1,
}
# Back to pending: the row keeps its ``seq``, so it is again at the head of its queue.
_REQUEUE_EXPIRED = (
    update(task_table)
    .where(
        _IS_CLAIMED,
        _T.claimed_at < bindparam("cutoff", type_=UTCDateTime),
        # ``@internal`` tasks are claimed by the server itself; their timeout is their own.
        ~_T.job_name.startswith(INTERNAL_ROOM + ":"),
    )
    .values(**_UNCLAIM_VALUES)
    .returning(*TASK_COLUMNS)
)
_RELEASE_CLAIM = (
    update(task_table)
    .where(_T.id == bindparam("task_id"), _IS_CLAIMED, _T.worker_id == bindparam("worker_id"))
    .values(**_UNCLAIM_VALUES)
    .returning(*TASK_COLUMNS)
)


async def requeue_expired_claims(conn: Connection, cutoff: datetime) -> list[Row]:
    """Return to pending every task claimed before ``cutoff`` and not started since."""
    return list((await conn.execute(_REQUEUE_EXPIRED, {"cutoff": cutoff})).all())


async def release_claim(conn: Connection, task_id: str, worker_id: str) -> Row | None:
    """Undo ``worker_id``'s claim of a task it never received (``None`` if it moved on)."""
    params = {"task_id": task_id, "worker_id": worker_id}
    return (await conn.execute(_RELEASE_CLAIM, params)).first()


_JOB = job_table.c
_IS_RUNNING = status_is(_T.status, TaskStatus.RUNNING.value)
_ATTEMPTS_LEFT = _T.attempt < (
    select(_JOB.max_attempts).where(_JOB.id == _T.job_id).scalar_subquery()
)


async def requeue_lost_tasks(conn: Connection, where: ColumnElement[bool]) -> list[Row]:
    """Back to pending, among the active tasks matching ``where``: the claimed ones (they
    never ran: no attempt used) and the running ones whose job allows another attempt.

    The caller fails what is left active (:func:`fail_active_tasks`).
    """
    never_ran = (
        update(task_table)
        .where(_IS_CLAIMED, where)
        .values(**_UNCLAIM_VALUES)
        .returning(*TASK_COLUMNS)
    )
    rerun = (
        update(task_table)
        .where(_IS_RUNNING, _ATTEMPTS_LEFT, where)
        .values(
            **_UNCLAIM_VALUES,
            started_at=None,
            attempt=_T.attempt + 1,
            # A new run reports its own progress.
            progress=None,
            progress_message=None,
        )
        .returning(*TASK_COLUMNS)
    )
    rows = list((await conn.execute(never_ran)).all())
    rows.extend((await conn.execute(rerun)).all())
    return rows


def running_tasks_of_job_started_before(job_id: str, cutoff: datetime) -> ColumnElement[bool]:
    """Running tasks of ``job_id`` that started before ``cutoff`` (a job's timeout)."""
    return and_(_IS_RUNNING, _T.job_id == job_id, _T.started_at < cutoff)


async def jobs_with_timeouts(conn: Connection) -> list[Row]:
    """``(id, timeout_seconds)`` of the active jobs with a timeout."""
    stmt = select(_JOB.id, _JOB.timeout_seconds).where(
        _JOB.timeout_seconds.is_not(None), _JOB.is_deleted == false()
    )
    return list((await conn.execute(stmt)).all())


async def set_retry_policy(
    conn: Connection, job_id: str, max_attempts: int | None, timeout_seconds: float | None
) -> None:
    """Store what a registration gave of ``max_attempts`` and ``timeout_seconds``."""
    values: dict[str, Any] = {}
    if max_attempts is not None:
        values["max_attempts"] = max_attempts
    if timeout_seconds is not None:
        values["timeout_seconds"] = timeout_seconds
    if values:
        await conn.execute(update(job_table).where(_JOB.id == job_id).values(**values))
