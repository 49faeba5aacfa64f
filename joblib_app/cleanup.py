"""The worker cleanup routine: one path for DELETE /workers, dropped sockets and the sweeper."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

from joblib_app.api.long_poll import notify_worker_deleted
from joblib_app.api.providers import forget_providers
from joblib_app.context import AppContext
from joblib_app.leases import announce_pending
from joblib_app.models import utcnow
from joblib_app.realtime.events import (
    JobsInvalidate,
    Outbox,
    ProvidersInvalidate,
    room_channel,
)
from joblib_app.store import jobs, providers, tasks, workers
from joblib_app.views import record_task_change

logger = logging.getLogger(__name__)

WORKER_GONE_ERROR = "Worker disconnected"


async def cleanup_workers(
    ctx: AppContext,
    worker_ids: Collection[str],
    *,
    reason: str,
    stale_before: datetime | None = None,
) -> list[str]:
    """Remove workers and everything that depended on them, in one transaction.

    Queues their claimed tasks again (they never ran) and their running tasks whose job
    allows another attempt, fails the other running ones, deletes their providers, job links and the
    worker rows, soft-deletes jobs left with no worker and no pending task (never
    ``@internal`` ones), then emits the events and calls ``on_rooms_cleaned`` with the rooms
    whose providers were removed. Returns the ids of the workers that existed.

    With ``stale_before`` (the sweeper), only the workers whose heartbeat is still older
    than that are removed: one may have beaten since the sweeper read its ids.
    """
    ids = list(dict.fromkeys(worker_ids))
    if not ids:
        return []
    outbox = Outbox()
    now: datetime = utcnow()
    async with ctx.db.write() as conn:
        await ctx.db.serialize_across_processes(conn, "joblib_app.cleanup_workers")
        if stale_before is not None:
            ids = await workers.lock_stale_workers(conn, ids, stale_before)
            if not ids:
                return []
        served = await jobs.jobs_of_workers(conn, ids)
        await jobs.lock_jobs(conn, [job.id for job in served])
        # Claimed tasks never ran, and a job may allow more runs: those are queued again.
        requeued = await tasks.requeue_lost_tasks(conn, tasks.active_tasks_of_workers(ids))
        failed = await tasks.fail_active_tasks(
            conn, tasks.active_tasks_of_workers(ids), WORKER_GONE_ERROR, now
        )
        removed_providers = await providers.delete_providers_of_workers(conn, ids)
        deleted = await workers.delete_workers(conn, ids)
        orphaned = await jobs.soft_delete_orphans(conn, [job.id for job in served])
    forget_providers(ctx, [row.full_name for row in removed_providers])
    for row in failed:
        record_task_change(outbox, row, {})
    for worker_id in deleted:
        notify_worker_deleted(outbox, worker_id)
    for room_id in sorted({job.room_id for job in served}):
        outbox.emit(JobsInvalidate(), room_channel(room_id))
    provider_rooms = sorted({row.room_id for row in removed_providers})
    for room_id in provider_rooms:
        outbox.emit(ProvidersInvalidate(), room_channel(room_id))
    await ctx.dispatch(outbox)
    await announce_pending(ctx, requeued)
    if deleted:
        logger.info(
            "Cleaned up %d worker(s) (%s): %d task(s) failed, %d requeued, %d provider(s) "
            "removed, %d job(s) soft-deleted",
            len(deleted),
            reason,
            len(failed),
            len(requeued),
            len(removed_providers),
            len(orphaned),
        )
    if provider_rooms and ctx.config.on_rooms_cleaned is not None:
        try:
            await ctx.config.on_rooms_cleaned(provider_rooms)
        except Exception:
            logger.exception("on_rooms_cleaned hook failed for rooms %s", provider_rooms)
    return deleted
