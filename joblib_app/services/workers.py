"""Workers: create, heartbeat, delete, list; the cleanup after a worker is gone (one path
for DELETE /workers, dropped Socket.IO connections and the sweeper); attaching a
Socket.IO connection to a worker's job and provider rooms."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

from joblib_app.context import AppContext
from joblib_app.domain.errors import Forbidden, WorkerNotFound
from joblib_app.domain.names import is_plain_id, parse_full_name
from joblib_app.models import utcnow
from joblib_app.principal import Principal
from joblib_app.realtime.events import JobsInvalidate, Outbox, ProvidersInvalidate, room_channel
from joblib_app.services.access import owned_worker
from joblib_app.services.events import announce_pending, notify_worker_deleted, record_task_change
from joblib_app.services.provider_rows import forget_providers
from joblib_app.services.rows import Record
from joblib_app.store import jobs, providers, tasks, workers

logger = logging.getLogger(__name__)

WORKER_GONE_ERROR = "Worker disconnected"


async def create_worker(ctx: AppContext, principal: Principal) -> Record:
    """A new worker of ``principal``."""
    async with ctx.db.write() as conn:
        return await workers.create_worker(conn, principal.id, utcnow())


async def list_workers(ctx: AppContext, *, limit: int, offset: int) -> tuple[list[Record], int]:
    """A page of every worker, with the number of jobs each serves, and their total."""
    async with ctx.db.read() as conn:
        rows, total = await workers.list_workers(conn, limit=limit, offset=offset)
    return list(rows), total


async def heartbeat(ctx: AppContext, principal: Principal, worker_id: str) -> Record:
    """Record a sign of life of the caller's worker."""
    async with ctx.db.write() as conn:
        await owned_worker(conn, principal, worker_id, action="send its heartbeat")
        row = await workers.touch_worker(conn, worker_id, utcnow())
    if row is None:
        raise WorkerNotFound(worker_id)
    return row


async def delete_worker(ctx: AppContext, principal: Principal, worker_id: str) -> None:
    """Delete a worker (its owner's, or any for a superuser) and clean up after it."""
    async with ctx.db.read() as conn:
        await owned_worker(conn, principal, worker_id, action="delete it", superuser_may=True)
    await cleanup_workers(ctx, [worker_id], reason=f"deleted by {principal.id}")


async def cleanup_workers(
    ctx: AppContext,
    worker_ids: Collection[str],
    *,
    reason: str,
    stale_before: datetime | None = None,
) -> list[str]:
    """Remove workers and everything that depended on them, in one transaction.

    Queues their claimed tasks again (they never ran) and their running tasks whose job
    allows another attempt, fails the other running ones, deletes their providers, job
    links and the worker rows, soft-deletes jobs left with no worker and no pending task
    (never ``@internal`` ones), then emits the events and calls ``on_rooms_cleaned`` with
    the rooms whose providers were removed. Returns the ids of the workers that existed.

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
    return list(deleted)


async def connection_worker(ctx: AppContext, principal: Principal, worker_id: str) -> str:
    """``worker_id`` if it is the caller's worker (a Socket.IO room join), else ``404``
    (another user's worker is not revealed)."""
    if not is_plain_id(worker_id):
        raise WorkerNotFound(worker_id, shown=repr(worker_id[:40]))
    async with ctx.db.read() as conn:
        await owned_worker(conn, principal, worker_id, action=None)
    return worker_id


async def check_serves_job(ctx: AppContext, worker_id: str, job_name: str) -> None:
    """``403`` unless ``worker_id`` is linked to the job ``job_name``."""
    async with ctx.db.read() as conn:
        served = await jobs.job_names_of_worker(conn, worker_id)
    if job_name not in served:
        raise Forbidden(f"Worker '{worker_id}' does not serve job '{job_name}'")


async def check_serves_provider(ctx: AppContext, worker_id: str, name: str) -> None:
    """``403`` unless ``worker_id`` is the worker of the provider ``name``."""
    if parse_full_name(name) is None:
        raise Forbidden(f"Worker '{worker_id}' does not serve provider {name[:40]!r}")
    async with ctx.db.read() as conn:
        provider = await providers.get_provider_by_name(conn, name)
    if provider is None or provider.worker_id != worker_id:
        raise Forbidden(f"Worker '{worker_id}' does not serve provider '{name}'")


async def worker_seen(ctx: AppContext, worker_id: str) -> None:
    """A sign of life that is no heartbeat (a room join): a cleanup pending from the
    worker's dropped connection spares it."""
    async with ctx.db.write() as conn:
        await workers.touch_worker(conn, worker_id, utcnow())
