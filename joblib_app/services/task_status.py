"""Reading a task, and moving it along its state machine: the one status-change operation
of the REST API, the internal executors, enqueue failures and the shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pydantic_core

from joblib_app.context import AppContext
from joblib_app.domain.errors import ContentTooLarge, Forbidden, TaskNotFound
from joblib_app.domain.statuses import LEAVES_PENDING, TaskStatus, check_transition, is_terminal
from joblib_app.models import utcnow
from joblib_app.principal import Principal
from joblib_app.realtime.events import (
    JobsInvalidate,
    Outbox,
    TaskCancelRequested,
    room_channel,
    task_notify_channel,
    worker_channel,
)
from joblib_app.services.access import check_readable_task, may_update_task
from joblib_app.services.events import record_task_change
from joblib_app.services.rows import Record
from joblib_app.services.stopping import STOPPING, until_stopping
from joblib_app.store import jobs, tasks

# Waiters are woken by the notifier; this re-read only covers a lost notification.
SAFETY_RECHECK_SECONDS = 5.0
# What a pending task may be asked for without a claimer to check: itself (no change) and
# cancellation. Anything else is the transition's 409, whoever asks.
_PENDING_TARGETS = frozenset({TaskStatus.PENDING, TaskStatus.CANCELLED})

TaskView = tuple[Record, dict[int, int]]


async def read_task(ctx: AppContext, task_id: str) -> TaskView:
    """The task row and its queue position, or ``404 task-not-found``."""
    async with ctx.db.read() as conn:
        row = await tasks.get_task(conn, task_id)
        if row is None:
            raise TaskNotFound(task_id)
        return row, await tasks.queue_positions(conn, [row])


async def read_visible_task(ctx: AppContext, principal: Principal, task_id: str) -> TaskView:
    """:func:`read_task`, for a caller allowed to see it (else ``404``)."""
    row, positions = await read_task(ctx, task_id)
    await check_readable_task(ctx, principal, row)
    return row, positions


async def wait_for_task(
    ctx: AppContext, principal: Principal, task_id: str, seconds: float
) -> tuple[Record, dict[int, int], bool]:
    """The task once it is terminal, or after ``seconds`` (or at shutdown).

    The third value says whether the wait was applied: a task terminal at once is answered
    without waiting.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    # Subscribe before reading, so a change between the read and the wait still wakes us.
    async with ctx.notifier.listen([task_notify_channel(task_id)]) as listener:
        row, positions = await read_visible_task(ctx, principal, task_id)
        if is_terminal(row.status):
            return row, positions, False
        while not is_terminal(row.status):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            woken = await until_stopping(ctx, listener.wait(min(remaining, SAFETY_RECHECK_SECONDS)))
            row, positions = await read_task(ctx, task_id)
            if woken is STOPPING:
                break
    return row, positions, True


def _actor_rule(actor: Principal | None, target: TaskStatus) -> str:
    """:func:`~joblib_app.services.access.may_update_task` as the store's SQL condition."""
    if actor is None or actor.is_superuser:
        return tasks.ANY_ACTOR
    return tasks.OWNER_OR_SUBMITTER if target is TaskStatus.CANCELLED else tasks.WORKER_OWNER


def check_result_size(result: Any, limit: int) -> None:
    """``413`` when the result's compact JSON is larger than ``limit`` bytes."""
    size = len(pydantic_core.to_json(result))
    if size > limit:
        raise ContentTooLarge(
            f"The task result is {size} bytes of JSON, more than max_task_result_bytes ({limit})"
        )


async def set_task_status(
    ctx: AppContext,
    task_id: str,
    target: TaskStatus,
    *,
    error: str | None = None,
    actor: Principal | None = None,
    reported: Mapping[str, Any] | None = None,
) -> TaskView:
    """Move the task to ``target``, then emit its event and wake its waiters.

    ``actor`` is the user asking (checked with ``may_update_task``); ``None`` is the system
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
    leaves_pending = target in LEAVES_PENDING
    connect = ctx.db.write if leaves_pending else ctx.db.autocommit
    orphaned: list[Record] = []
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
                    raise TaskNotFound(task_id)
                current = TaskStatus(row.status)
                if current is TaskStatus.PENDING and target not in _PENDING_TARGETS:
                    # A pending task has no claimer to check against (its lease expired, or
                    # it was never claimed): the answer is the transition's, 409. Pending
                    # itself is the same-status update, answered below.
                    check_transition(current, target)
                if actor is not None and not may_update_task(actor, row, target):
                    raise Forbidden(
                        "Only the claiming worker's owner or a superuser may update this task"
                    )
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
            # Only the claiming worker's connection hears it (see the Socket.IO namespace).
            outbox.emit(
                TaskCancelRequested(
                    task_id=updated.id, job_name=updated.job_name, room_id=updated.room_id
                ),
                worker_channel(updated.worker_id),
            )
        await ctx.dispatch(outbox)
        return updated, positions
