"""Moving a task along its state machine, shared by the REST API and internal executors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import Row

from joblib_app.context import AppContext
from joblib_app.models import TaskStatus, utcnow
from joblib_app.problems import task_not_found
from joblib_app.realtime.events import Outbox
from joblib_app.store import tasks
from joblib_app.transitions import check_transition
from joblib_app.views import record_task_change

Authorize = Callable[[Row], Awaitable[None]]


async def read_task(ctx: AppContext, task_id: str) -> tuple[Row, dict[int, int]]:
    """The task row and its queue position, or ``404 task-not-found``."""
    async with ctx.db.read() as conn:
        row = await tasks.get_task(conn, task_id)
        if row is None:
            raise task_not_found(task_id)
        return row, await tasks.queue_positions(conn, [row])


async def set_task_status(
    ctx: AppContext,
    task_id: str,
    target: TaskStatus,
    *,
    error: str | None = None,
    authorize: Authorize | None = None,
) -> tuple[Row, dict[int, int]]:
    """Compare-and-set the task's status, then emit its event and wake its waiters.

    ``authorize`` sees the current row (with ``worker_user_id``, the owner of the claiming
    worker) and raises to refuse. Read, decision and write share one transaction; the
    compare-and-set still guards against a concurrent change (PostgreSQL reads committed
    data), which makes the decision run again on the new state, so the transition table
    holds under any interleaving.
    """
    while True:
        async with ctx.db.write() as conn:
            row = await tasks.get_task_with_owner(conn, task_id)
            if row is None:
                raise task_not_found(task_id)
            if authorize is not None:
                await authorize(row)
            check_transition(TaskStatus(row.status), target)
            updated = await tasks.transition(
                conn, task_id, from_status=row.status, to_status=target, error=error, now=utcnow()
            )
            if updated is None:
                continue
            positions = await tasks.queue_positions(conn, [updated])
        outbox = Outbox()
        record_task_change(outbox, updated, positions)
        await ctx.dispatch(outbox)
        return updated, positions
