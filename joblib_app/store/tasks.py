"""Task rows: submit, claim, status changes, progress, queue position, listing.

What the sweeper and the worker cleanup do to tasks (requeue, fail, release) is in
``task_recovery``, re-exported here: callers use ``store.tasks`` for both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select, update

from joblib_app.domain.statuses import ALLOWED_TRANSITIONS, TaskStatus
from joblib_app.models import (
    task_table,
    utcnow,
    worker_table,
)
from joblib_app.store.connection import Connection, Row
from joblib_app.store.task_columns import (
    IS_ACTIVE,
    IS_PENDING,
    PENDING,
    TASK_COLUMNS,
    status_is,
)
from joblib_app.store.task_recovery import (
    active_tasks_of_workers,
    fail_active_tasks,
    internal_tasks_older_than,
    jobs_with_timeouts,
    mark_claimed,
    release_claim,
    requeue_expired_claims,
    requeue_lost_tasks,
    running_tasks_of_job_started_before,
    set_retry_policy,
)
from joblib_app.store.task_submit import (
    TaskRow,
    insert_task,
    submit_to_active_job,
    submitted_position,
)

__all__ = [
    "ANY_ACTOR",
    "IS_ACTIVE",
    "IS_PENDING",
    "OWNER_OR_SUBMITTER",
    "REPORTED_COLUMNS",
    "TASK_COLUMNS",
    "WORKER_OWNER",
    "TaskRow",
    "active_tasks_of_workers",
    "claim_next",
    "fail_active_tasks",
    "get_task",
    "get_task_with_owner",
    "insert_task",
    "internal_tasks_older_than",
    "jobs_with_timeouts",
    "list_tasks",
    "mark_claimed",
    "queue_positions",
    "release_claim",
    "report_progress",
    "requeue_expired_claims",
    "requeue_lost_tasks",
    "running_tasks_of_job_started_before",
    "set_retry_policy",
    "status_is",
    "submit_to_active_job",
    "transition",
    "transition_if_allowed",
]

_T = task_table.c
_PENDING = PENDING

# The hot path's statements are built once: building a Core statement and its cache key
# on every call costs more than running it on SQLite.
_GET_TASK = select(*TASK_COLUMNS).where(_T.id == bindparam("task_id"))
_GET_TASK_WITH_OWNER = (
    select(*TASK_COLUMNS, worker_table.c.user_id.label("worker_user_id"))
    .select_from(task_table.outerjoin(worker_table, worker_table.c.id == _T.worker_id))
    .where(_T.id == bindparam("task_id"))
)


_TRANSITIONS: dict[tuple[TaskStatus, bool, frozenset[str]], Any] = {}
# What a worker may report along with a status (see ``TaskUpdate``): set only when given.
REPORTED_COLUMNS = frozenset({"result", "progress", "progress_message"})


def _transition_values(
    to_status: TaskStatus, with_error: bool, reported: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The columns a move to ``to_status`` sets (``now``/``error`` bound at execution)."""
    values: dict[str, Any] = {"status": to_status.value, "version": _T.version + 1}
    if to_status is TaskStatus.RUNNING:
        values["started_at"] = bindparam("now")
    if to_status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        values["completed_at"] = bindparam("now")
    if with_error:
        values["error"] = bindparam("error")
    for name in sorted(reported):
        values[name] = bindparam(name, type_=task_table.c[name].type)
    return values


def _transition_statement(
    to_status: TaskStatus, with_error: bool, reported: frozenset[str] = frozenset()
) -> Any:
    """``UPDATE`` of one task from a given status, built once per (target, fields) set."""
    key = (to_status, with_error, reported)
    stmt = _TRANSITIONS.get(key)
    if stmt is None:
        stmt = (
            update(task_table)
            .where(_T.id == bindparam("task_id"), _T.status == bindparam("from_status"))
            .values(**_transition_values(to_status, with_error, reported))
            .returning(*TASK_COLUMNS)
        )
        _TRANSITIONS[key] = stmt
    return stmt


# Who may move a task, as SQL: anyone (superusers, the system), the owner of the claiming
# worker, or that owner or the task's submitter (cancelling).
ANY_ACTOR = "any"
WORKER_OWNER = "owner"
OWNER_OR_SUBMITTER = "owner-or-submitter"
_GUARDED: dict[tuple[TaskStatus, bool, str, frozenset[str]], Any] = {}


def _guarded_transition_statement(
    to_status: TaskStatus, with_error: bool, actor: str, reported: frozenset[str] = frozenset()
) -> Any:
    """``UPDATE`` that applies only when allowed: by the transition table and by ``actor``."""
    key = (to_status, with_error, actor, reported)
    stmt = _GUARDED.get(key)
    if stmt is None:
        sources = [s for s, targets in ALLOWED_TRANSITIONS.items() if to_status in targets]
        # Correlated: one primary-key probe, however many workers the user has.
        owned = (
            exists()
            .where(
                worker_table.c.id == _T.worker_id,
                worker_table.c.user_id == bindparam("actor_id"),
            )
            .correlate(task_table)
        )
        conditions = [
            _T.id == bindparam("task_id"),
            status_is(_T.status, *(s.value for s in sources)),
        ]
        if actor == WORKER_OWNER:
            conditions.append(owned)
        elif actor == OWNER_OR_SUBMITTER:
            conditions.append(or_(owned, _T.created_by == bindparam("actor_id")))
        stmt = (
            update(task_table)
            .where(*conditions)
            .values(**_transition_values(to_status, with_error, reported))
            .returning(*TASK_COLUMNS)
        )
        _GUARDED[key] = stmt
    return stmt


# Statuses some transition leads to (``pending`` is none: only a requeue returns there).
_REACHABLE = frozenset().union(*ALLOWED_TRANSITIONS.values())


async def transition_if_allowed(
    conn: Connection,
    task_id: str,
    *,
    to_status: TaskStatus,
    actor: str,
    actor_id: str | None,
    error: str | None,
    now: datetime,
    reported: Mapping[str, Any] | None = None,
) -> Row | None:
    """Move the task in one statement if the transition table and ``actor`` allow it.

    ``reported`` holds what the worker reports with the status (columns of
    ``REPORTED_COLUMNS``), set in the same statement. ``None`` says only that it did not
    happen (unknown task, refused, or not allowed from the current status): the caller
    reads the row to answer the precise error.
    """
    if to_status not in _REACHABLE:
        return None
    fields = frozenset(reported or ())
    stmt = _guarded_transition_statement(to_status, error is not None, actor, fields)
    params: dict[str, Any] = {"task_id": task_id, "actor_id": actor_id, "now": now}
    if error is not None:
        params["error"] = error
    if reported:
        params.update(reported)
    return (await conn.execute(stmt, params)).first()


_PROGRESS: dict[tuple[str, frozenset[str]], Any] = {}


def _progress_statement(actor: str, reported: frozenset[str]) -> Any:
    """``UPDATE`` of a running task's progress, by ``actor`` (not a transition)."""
    key = (actor, reported)
    stmt = _PROGRESS.get(key)
    if stmt is None:
        conditions = [_T.id == bindparam("task_id"), status_is(_T.status, "running")]
        if actor != ANY_ACTOR:
            conditions.append(
                exists()
                .where(
                    worker_table.c.id == _T.worker_id,
                    worker_table.c.user_id == bindparam("actor_id"),
                )
                .correlate(task_table)
            )
        values: dict[str, Any] = {"version": _T.version + 1}
        for name in sorted(reported):
            values[name] = bindparam(name, type_=task_table.c[name].type)
        stmt = update(task_table).where(*conditions).values(**values).returning(*TASK_COLUMNS)
        _PROGRESS[key] = stmt
    return stmt


async def report_progress(
    conn: Connection,
    task_id: str,
    *,
    actor: str,
    actor_id: str | None,
    reported: Mapping[str, Any],
) -> Row | None:
    """Store a running task's progress in one statement; ``None`` if it did not apply
    (not running, unknown, or not the claiming worker's owner).

    ``actor`` is :data:`ANY_ACTOR` or :data:`WORKER_OWNER`.
    """
    stmt = _progress_statement(actor, frozenset(reported))
    params: dict[str, Any] = {"task_id": task_id, "actor_id": actor_id, **reported}
    return (await conn.execute(stmt, params)).first()


def _queue_positions_statement() -> Any:
    ahead = task_table.alias("ahead")
    position = (
        select(func.count())
        .select_from(ahead)
        .where(
            ahead.c.job_id == _T.job_id,
            status_is(ahead.c.status, _PENDING),
            ahead.c.seq <= _T.seq,
        )
        .scalar_subquery()
    )
    return select(_T.seq, position).where(_T.seq.in_(bindparam("seqs", expanding=True)))


_QUEUE_POSITIONS = _queue_positions_statement()
_QUEUE_POSITION = (
    select(func.count())
    .select_from(task_table)
    .where(_T.job_id == bindparam("job_id"), IS_PENDING, _T.seq <= bindparam("seq"))
)


async def get_task(conn: Connection, task_id: str) -> Row | None:
    return (await conn.execute(_GET_TASK, {"task_id": task_id})).first()


async def get_task_with_owner(conn: Connection, task_id: str) -> Row | None:
    """The task row plus ``worker_user_id``, the owner of its claiming worker (or ``None``)."""
    return (await conn.execute(_GET_TASK_WITH_OWNER, {"task_id": task_id})).first()


async def claim_next(
    conn: Connection, worker_id: str, *, owner_id: str | None = None
) -> Row | None:
    """Claim the oldest pending task among the worker's jobs.

    With ``owner_id``, only if the worker belongs to that user (``None`` otherwise, as when
    nothing is pending: the caller tells the two apart when it needs to).
    One statement, the driver's (``RULES.claim_statement`` of ``store/sqlite.py`` and
    ``store/postgres.py``).
    """
    stmt = conn.rules.claim_statement(owner_checked=owner_id is not None)
    params = {"worker_id": worker_id, "owner_id": owner_id, "now": utcnow()}
    return (await conn.execute(stmt, params)).first()


async def transition(
    conn: Connection,
    task_id: str,
    *,
    from_status: str,
    to_status: TaskStatus,
    error: str | None,
    now: datetime,
    reported: Mapping[str, Any] | None = None,
) -> Row | None:
    """Compare-and-set the status; ``None`` when the task is no longer in ``from_status``."""
    stmt = _transition_statement(to_status, error is not None, frozenset(reported or ()))
    # Keys named after a column would be SET too: pass ``error`` only when setting it.
    params: dict[str, Any] = {"task_id": task_id, "from_status": from_status, "now": now}
    if error is not None:
        params["error"] = error
    if reported:
        params.update(reported)
    return (await conn.execute(stmt, params)).first()


async def queue_positions(conn: Connection, rows: Sequence[Row]) -> dict[int, int]:
    """1-based position of each pending row within its job's queue, in one query.

    Counts pending tasks of the same job that arrived no later, on the partial index of
    pending tasks, so the cost follows the queue ahead of each task, not the table.
    """
    pending = [row for row in rows if row.status == _PENDING]
    if not pending:
        return {}
    if len(pending) == 1 and (known := submitted_position(pending[0])) is not None:
        # Counted by the submit's own statement (PostgreSQL: see ``task_submit``).
        return {pending[0].seq: known}
    if len(pending) == 1:
        # The common case (a submit, a single read) as a plain statement, without the list
        # expansion that keeps the general query from being compiled once.
        row = pending[0]
        params = {"job_id": row.job_id, "seq": row.seq}
        return {row.seq: (await conn.execute(_QUEUE_POSITION, params)).scalar_one()}
    result = await conn.execute(_QUEUE_POSITIONS, {"seqs": [row.seq for row in pending]})
    return {seq: count for seq, count in result}


async def list_tasks(
    conn: Connection,
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
