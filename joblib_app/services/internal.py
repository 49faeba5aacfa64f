"""The server side of ``@internal`` jobs: job rows at start-up, enqueueing at submit."""

from __future__ import annotations

import asyncio
import logging

from joblib_app.context import AppContext
from joblib_app.domain.errors import InternalJobNotConfigured
from joblib_app.domain.names import INTERNAL_ROOM
from joblib_app.domain.statuses import TaskStatus
from joblib_app.extension import category_of
from joblib_app.internal.registry import InternalRegistry
from joblib_app.models import utcnow
from joblib_app.services.jobs import upsert_job
from joblib_app.services.rows import Record
from joblib_app.services.task_status import set_task_status

logger = logging.getLogger(__name__)


def _enqueue_error(exc: BaseException) -> str:
    """The error text of a failed enqueue, with its causes.

    taskiq wraps every broker failure in ``SendTaskError("Cannot send task to the
    queue")``; the cause (e.g. the refused Redis connection) is what the user needs.
    """
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 4:
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "Could not enqueue internal task: " + " <- ".join(parts)


def require_internal_executor(ctx: AppContext, job_full_name: str) -> None:
    """``503 internal-job-not-configured`` unless this process can enqueue the job."""
    if ctx.internal is None or job_full_name not in ctx.internal:
        raise InternalJobNotConfigured(job_full_name)


async def dispatch_internal_task(ctx: AppContext, row: Record) -> Record:
    """Enqueue a claimed internal task on the broker; fail it if enqueueing fails."""
    assert ctx.internal is not None
    task = ctx.internal.tasks[row.job_name]
    try:
        # Bounded: a hung broker (Redis stopped) must not hold the submit.
        async with asyncio.timeout(ctx.settings.redis_operation_timeout_seconds):
            await task.kiq(row.payload, row.room_id, row.id)
    except Exception as exc:
        logger.exception("Could not enqueue internal task %s (%s)", row.id, row.job_name)
        failed, _ = await set_task_status(ctx, row.id, TaskStatus.FAILED, error=_enqueue_error(exc))
        return failed
    return row


async def ensure_internal_jobs(ctx: AppContext, registry: InternalRegistry) -> None:
    """Create or reactivate the ``@internal`` job rows; safe with several processes.

    The insert ignores a conflicting full name, so two processes starting together end
    with one row per extension; a changed schema replaces the stored one.
    """
    now = utcnow()
    async with ctx.db.write() as conn:
        for full_name, extension in registry.extensions.items():
            await upsert_job(
                conn,
                room_id=INTERNAL_ROOM,
                category=category_of(extension),
                name=extension.__name__,
                full_name=full_name,
                schema=extension.model_json_schema(),
                now=now,
                replace_schema=True,
            )
    logger.info("Internal jobs ready: %s", ", ".join(registry.extensions) or "none")
