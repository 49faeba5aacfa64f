"""Moving a task along its state machine, shared by the REST API and internal executors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row

from joblib_app.context import AppContext
from joblib_app.models import TaskStatus, utcnow
from joblib_app.principal import Principal
from joblib_app.problems import forbidden, task_not_found
from joblib_app.realtime.events import (
    JobsInvalidate,
    Outbox,
    TaskCancelRequested,
    room_channel,
    worker_channel,
)
from joblib_app.store import jobs, tasks
from joblib_app.transitions import check_transition
from joblib_app.views import record_task_change

# The targets that take a task out of pending. A worker's claim (``claim_next``) needs no
# check: the claiming worker serves the job, as the claim statement itself requires.
_LEAVES_PENDING = frozenset({TaskStatus.CLAIMED, TaskStatus.CANCELLED})
_PENDING_TARGETS = frozenset({TaskStatus.PENDING, TaskStatus.CANCELLED})


async def read_task(ctx: AppContext, task_id: str) -> tuple[Row, dict[int, int]]:
    """The task row and its queue position, or ``404 task-not-found``."""
    async with ctx.db.read() as conn:
        row = await tasks.get_task(conn, task_id)
        if row is None:
            raise task_not_found(task_id)
        return row, await tasks.queue_positions(conn, [row])


def may_update(principal: Principal, row: Row, target: TaskStatus) -> bool:
    """Who may move a task: a superuser, the owner of the claiming worker, or (to cancel)
    the user who submitted it. ``row`` carries ``worker_user_id``
    (see ``tasks.get_task_with_owner``)."""
    if principal.is_superuser:
        return True
    if target is TaskStatus.CANCELLED and row.created_by == principal.id:
        return True
    return row.worker_user_id is not None and row.worker_user_id == principal.id


def _actor_rule(actor: Principal | None, target: TaskStatus) -> str:
    """:func:`may_update` as the store's SQL condition."""
    if actor is None or actor.is_superuser:
        return tasks.ANY_ACTOR
    return tasks.OWNER_OR_SUBMITTER if target is TaskStatus.CANCELLED else tasks.WORKER_OWNER


async def set_task_status(
    ctx: AppContext,
    task_id: str,
    target: TaskStatus,
    *,
    error: str | None = None,
    actor: Principal | None = None,
    reported: Mapping[str, Any] | None = None,
) -> tuple[Row, dict[int, int]]:
    """Move the task to ``target``, then emit its event and wake its waiters.

    ``actor`` is the user asking (checked with :func:`may_update`); ``None`` is the system
    itself (internal executors, enqueue failures), which is not checked.

    The common case is one guarded ``UPDATE`` (transition table and authorisation in its
    ``WHERE``). When it changes nothing, the row is read to answer the precise error (404,
    403, 409) or, if the task changed in between, to try again with compare-and-set on the
    status it now has; so the transition table holds under any interleaving.

    ``reported`` carries what a worker reports with the status (``result`` on completion,
    ``progress``/``progress_message`` while running). A progress report on a running task
    is no transition: it updates the task (one statement, an event). Asking for the status
    the task already has changes nothing and emits nothing (the answer is the task as it
    is), and so does a progress report on a cancelled task: that answer is how a worker
    without Socket.IO learns of the cancellation.
    """
    rule = _actor_rule(actor, target)
    actor_id = actor.id if actor is not None else None
    # A task leaving pending may be the last one of a job that no worker serves any more:
    # the job is then soft-deleted in the same transaction (never ``@internal`` ones).
    leaves_pending = target in _LEAVES_PENDING
    connect = ctx.db.write if leaves_pending else ctx.db.autocommit
    orphaned: list[Row] = []
    progress = bool(reported) and target is TaskStatus.RUNNING
    while True:
        # Each statement is correct on its own: the guarded update applies atomically or
        # not at all, and a change between the read and the compare-and-set loops again.
        async with connect() as conn:
            if leaves_pending:
                await jobs.lock_job_of_task(conn, task_id)
            now = utcnow()
            updated = None
            if progress:
                assert reported is not None
                # The common progress report: a running task, one statement.
                updated = await tasks.report_progress(
                    conn, task_id, actor=rule, actor_id=actor_id, reported=reported
                )
            if updated is None:
                updated = await tasks.transition_if_allowed(
                    conn,
                    task_id,
                    to_status=target,
                    actor=rule,
                    actor_id=actor_id,
                    error=error,
                    now=now,
                    reported=reported,
                )
            if updated is None:
                row = await tasks.get_task_with_owner(conn, task_id)
                if row is None:
                    raise task_not_found(task_id)
                if row.status == TaskStatus.PENDING.value and target not in _PENDING_TARGETS:
                    # A pending task has no claimer to check against (its lease expired, or
                    # it was never claimed): the answer is the transition's, 409. Pending
                    # itself is the same-status update, answered below.
                    check_transition(TaskStatus(row.status), target)
                if actor is not None and not may_update(actor, row, target):
                    raise forbidden(
                        "Only the claiming worker's owner or a superuser may update this task"
                    )
                current = TaskStatus(row.status)
                if current is target and progress:
                    # It started running in between: report on the running task.
                    continue
                if current is target or (progress and current is TaskStatus.CANCELLED):
                    return row, await tasks.queue_positions(conn, [row])
                check_transition(current, target)
                updated = await tasks.transition(
                    conn,
                    task_id,
                    from_status=row.status,
                    to_status=target,
                    error=error,
                    now=now,
                    reported=reported,
                )
                if updated is None:
                    continue
            positions = await tasks.queue_positions(conn, [updated])
            if leaves_pending:
                orphaned = await jobs.soft_delete_orphans(conn, [updated.job_id])
        outbox = Outbox()
        record_task_change(outbox, updated, positions)
        for job in orphaned:
            outbox.emit(JobsInvalidate(), room_channel(job.room_id))
        if target is TaskStatus.CANCELLED and updated.worker_id is not None:
            # Only the claiming worker's connection hears it (see the Socket.IO handlers).
            outbox.emit(
                TaskCancelRequested(
                    task_id=updated.id, job_name=updated.job_name, room_id=updated.room_id
                ),
                worker_channel(updated.worker_id),
            )
        await ctx.dispatch(outbox)
        return updated, positions
