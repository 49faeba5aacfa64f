"""The sweeper's operations: tasks whose run outlived its bounds."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from joblib_app.context import AppContext
from joblib_app.services.events import announce_changes, announce_pending
from joblib_app.services.rows import Record
from joblib_app.store import tasks

logger = logging.getLogger(__name__)


async def fail_stuck_internal_tasks(ctx: AppContext, now: datetime) -> list[Record]:
    """Internal tasks claimed or running longer than ``internal_task_timeout_seconds``."""
    timeout = ctx.settings.internal_task_timeout_seconds
    async with ctx.db.write() as conn:
        stuck = await tasks.fail_active_tasks(
            conn,
            tasks.internal_tasks_older_than(now - timedelta(seconds=timeout)),
            f"Internal task timed out after {timeout:g} s",
            now,
        )
    if stuck:
        await announce_changes(ctx, stuck)
        logger.warning("Sweeper failed %d stuck internal task(s)", len(stuck))
    return list(stuck)


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
        await announce_changes(ctx, failed)
        await announce_pending(ctx, requeued)
        if requeued or failed:
            logger.warning(
                "%d task(s) ran longer than %g s: %d requeued, %d failed",
                len(requeued) + len(failed),
                timeout,
                len(requeued),
                len(failed),
            )
