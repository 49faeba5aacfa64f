"""Periodic recovery: workers that stopped heartbeating, internal tasks that never finished."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from joblib_app.cleanup import cleanup_workers
from joblib_app.context import AppContext
from joblib_app.leases import announce_pending, requeue_expired_claims
from joblib_app.models import utcnow
from joblib_app.realtime.events import Outbox
from joblib_app.retention import delete_finished_tasks
from joblib_app.store import tasks, workers
from joblib_app.views import record_task_change

logger = logging.getLogger(__name__)
SWEEPER_STOP = "sweeper_stop"


@dataclass(frozen=True)
class SweepReport:
    workers_removed: int
    internal_tasks_failed: int
    claims_requeued: int = 0
    tasks_deleted: int = 0


async def sweep_once(ctx: AppContext, *, judge_workers: bool = True) -> SweepReport:
    """One cycle. Safe to run from several processes at once: every change is conditional
    on the row's current state, so a task is failed once whoever sweeps first.

    ``judge_workers=False`` leaves stale workers alone (a server just started: see
    :func:`run_sweeper`)."""
    now = utcnow()
    settings = ctx.settings
    stale_cutoff = now - timedelta(seconds=settings.worker_timeout_seconds)
    stale: list[str] = []
    if judge_workers:
        async with ctx.db.read() as conn:
            stale = await workers.stale_worker_ids(conn, stale_cutoff)
    removed = (
        await cleanup_workers(ctx, stale, reason="heartbeat timed out", stale_before=stale_cutoff)
        if stale
        else []
    )

    internal_cutoff = now - timedelta(seconds=settings.internal_task_timeout_seconds)
    async with ctx.db.write() as conn:
        stuck = await tasks.fail_active_tasks(
            conn,
            tasks.internal_tasks_older_than(internal_cutoff),
            f"Internal task timed out after {settings.internal_task_timeout_seconds:g} s",
            now,
        )
    if stuck:
        outbox = Outbox()
        for row in stuck:
            record_task_change(outbox, row, {})
        await ctx.dispatch(outbox)
        logger.warning("Sweeper failed %d stuck internal task(s)", len(stuck))
    requeued = await requeue_expired_claims(ctx, now)
    await time_out_runs(ctx, now)
    deleted = 0
    if settings.task_retention_seconds is not None:
        retention_cutoff = now - timedelta(seconds=settings.task_retention_seconds)
        began = time.monotonic()
        deleted = await delete_finished_tasks(
            ctx,
            retention_cutoff,
            batch_size=settings.task_retention_batch_size,
            # Set by the app's startup: a long deletion ends between two batches at shutdown.
            stop=ctx.extras.get(SWEEPER_STOP),
        )
        if deleted:
            logger.info(
                "Sweeper deleted %d task(s) finished more than %g s ago, in %.2f s",
                deleted,
                settings.task_retention_seconds,
                time.monotonic() - began,
            )
    return SweepReport(
        workers_removed=len(removed),
        internal_tasks_failed=len(stuck),
        claims_requeued=len(requeued),
        tasks_deleted=deleted,
    )


async def time_out_runs(ctx: AppContext, now: datetime) -> None:
    """Runs longer than their job's ``timeout_seconds``: queued again while the job allows
    another attempt, else failed (``timed out``). The worker's later update is 409."""
    async with ctx.db.read() as conn:
        limited = await tasks.jobs_with_timeouts(conn)
    for job_id, timeout in limited:
        where = tasks.running_tasks_of_job_started_before(job_id, now - timedelta(seconds=timeout))
        async with ctx.db.write() as conn:
            requeued = await tasks.requeue_lost_tasks(conn, where)
            failed = await tasks.fail_active_tasks(
                conn, where, f"Task timed out after {timeout:g} s", now
            )
        if failed:
            outbox = Outbox()
            for row in failed:
                record_task_change(outbox, row, {})
            await ctx.dispatch(outbox)
        await announce_pending(ctx, requeued)
        if requeued or failed:
            logger.warning(
                "%d task(s) ran longer than %g s: %d requeued, %d failed",
                len(requeued) + len(failed),
                timeout,
                len(requeued),
                len(failed),
            )


async def run_sweeper(ctx: AppContext, stop: asyncio.Event) -> None:
    """Sweep every ``sweeper_interval_seconds`` until ``stop`` is set; a failing cycle is
    logged and the next one runs."""
    # Often enough that a lost claim is back in its queue within 1.5 leases.
    interval = min(ctx.settings.sweeper_interval_seconds, ctx.settings.claim_lease_seconds / 2)
    logger.info("Sweeper running every %g s", interval)
    loop = asyncio.get_running_loop()
    # A restarted server gives its workers one heartbeat timeout to reach it again: their
    # heartbeats failed while it was down, which says nothing about them.
    judge_after = loop.time() + ctx.settings.worker_timeout_seconds
    while not stop.is_set():
        try:
            await sweep_once(ctx, judge_workers=loop.time() >= judge_after)
        except Exception:
            logger.exception("Sweeper cycle failed; the next one runs in %g s", interval)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            continue
    logger.info("Sweeper stopped")
