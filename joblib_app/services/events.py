"""What a change tells the world: Socket.IO events and long-poll wake-ups, queued on an
:class:`~joblib_app.realtime.events.Outbox` and sent after the transaction commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from joblib_app.context import AppContext
from joblib_app.domain.statuses import is_terminal
from joblib_app.realtime.events import (
    Outbox,
    TaskAvailable,
    job_notify_channel,
    jobs_channel,
    task_notify_channel,
)
from joblib_app.services.rows import Record
from joblib_app.store import tasks

# Messages on a worker's channel (job channels carry task ids, which never equal these).
WORKER_DELETED: Final = "deleted"
WORKER_JOBS_CHANGED: Final = "jobs"


def worker_notify_channel(worker_id: str) -> str:
    """Notifier channel of one worker: its jobs changed, or it was deleted."""
    return f"worker:{worker_id}"


def notify_worker_jobs_changed(outbox: Outbox, worker_id: str) -> None:
    """Make the worker's open claim long-polls listen on its jobs again."""
    outbox.notify(worker_notify_channel(worker_id), WORKER_JOBS_CHANGED)


def notify_worker_deleted(outbox: Outbox, worker_id: str) -> None:
    """End the worker's open claim long-polls with ``404 worker-not-found``."""
    outbox.notify(worker_notify_channel(worker_id), WORKER_DELETED)


def record_task_change(outbox: Outbox, row: Record, positions: Mapping[int, int]) -> None:
    """Queue the status event for a changed task and wake its long-polls."""
    outbox.task_changed(row, positions.get(row.seq))
    if is_terminal(row.status):
        outbox.notify(task_notify_channel(row.id), row.status)


def record_task_available(outbox: Outbox, row: Record) -> None:
    """Queue ``task_available`` for a pending task and wake its job's claim long-polls."""
    outbox.emit(
        TaskAvailable(job_name=row.job_name, room_id=row.room_id, task_id=row.id),
        jobs_channel(row.job_name),
    )
    outbox.notify(job_notify_channel(row.job_name), row.id)


async def announce_changes(ctx: AppContext, rows: Sequence[Record]) -> None:
    """The status events of changed tasks that have no queue position (not pending)."""
    if not rows:
        return
    outbox = Outbox()
    for row in rows:
        record_task_change(outbox, row, {})
    await ctx.dispatch(outbox)


async def announce_pending(ctx: AppContext, rows: Sequence[Record]) -> None:
    """Events for tasks back in pending (lease, lost worker, timeout): their status,
    ``task_available``, and the wake-up of claim long-polls."""
    if not rows:
        return
    async with ctx.db.read() as conn:
        positions = await tasks.queue_positions(conn, rows)
    outbox = Outbox()
    for row in rows:
        record_task_change(outbox, row, positions)
        record_task_available(outbox, row)
    await ctx.dispatch(outbox)
