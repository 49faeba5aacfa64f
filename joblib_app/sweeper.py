"""Periodic recovery: workers that stopped heartbeating, internal tasks that never finished,
lost claims, runs past their timeout, old finished tasks. Each is a service operation; this
module only says when they run."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from joblib_app.context import AppContext
from joblib_app.models import utcnow
from joblib_app.retention import delete_finished_tasks
from joblib_app.services.claim import requeue_expired_claims
from joblib_app.services.recovery import fail_stuck_internal_tasks, time_out_runs
from joblib_app.services.workers import cleanup_workers
from joblib_app.store import workers

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

    stuck = await fail_stuck_internal_tasks(ctx, now)
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
