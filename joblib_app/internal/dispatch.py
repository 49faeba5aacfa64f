"""The server side of ``@internal`` jobs: job rows at start-up, enqueueing at submit."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Row

from joblib_app.context import AppContext
from joblib_app.extension import category_of
from joblib_app.internal.registry import InternalRegistry
from joblib_app.models import TaskStatus, utcnow
from joblib_app.names import INTERNAL_ROOM
from joblib_app.problems import ProblemError
from joblib_app.store import jobs
from joblib_app.task_changes import set_task_status

logger = logging.getLogger(__name__)


def _enqueue_error(exc: BaseException) -> str:
    """The error text of a failed enqueue, with its causes.

    taskiq wraps every broker failure in ``SendTaskError("Cannot send task to the
    queue")``; the cause (e.g. the refused Redis connection) is what the user needs.
    """
    parts = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 4:
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "Could not enqueue internal task: " + " <- ".join(parts)


def require_internal_executor(ctx: AppContext, job_full_name: str) -> None:
    """``503 internal-job-not-configured`` unless this process can enqueue the job."""
    if ctx.internal is None or job_full_name not in ctx.internal:
        raise ProblemError(
            503,
            "internal-job-not-configured",
            f"No executor is registered for internal job '{job_full_name}'",
        )


async def dispatch_internal_task(ctx: AppContext, row: Row) -> Row:
    """Enqueue a claimed internal task on the broker; fail it if enqueueing fails."""
    assert ctx.internal is not None
    task = ctx.internal.tasks[row.job_name]
    try:
        # Bounded: a hung broker (Redis stopped) must not hold the submit.
        async with asyncio.timeout(ctx.settings.redis_operation_timeout_seconds):
            await task.kiq(row.payload, row.room_id, row.id)
    except Exception as exc:
        logger.exception("Could not enqueue internal task %s (%s)", row.id, row.job_name)
        failed, _ = await set_task_status(
            ctx,
            row.id,
            TaskStatus.FAILED,
            error=_enqueue_error(exc),
        )
        return failed
    return row


async def ensure_internal_jobs(ctx: AppContext, registry: InternalRegistry) -> None:
    """Create or reactivate the ``@internal`` job rows; safe with several processes.

    The insert ignores a conflicting full name, so two processes starting together end
    with one row per extension.
    """
    now = utcnow()
    async with ctx.db.write() as conn:
        for full_name, extension in registry.extensions.items():
            schema = extension.model_json_schema()
            created = await jobs.insert_job(
                conn,
                room_id=INTERNAL_ROOM,
                category=category_of(extension),
                name=extension.__name__,
                full_name=full_name,
                schema=schema,
                now=now,
            )
            if created is not None:
                continue
            existing = await jobs.get_job(conn, full_name)
            if existing is not None and (existing.is_deleted or existing.schema != schema):
                await jobs.reactivate_job(conn, existing.id, schema, now)
    logger.info("Internal jobs ready: %s", ", ".join(registry.extensions) or "none")
