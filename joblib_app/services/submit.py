"""Submitting a task: to a worker's job (queued), or to an ``@internal`` one (enqueued on
the taskiq broker, already claimed)."""

from __future__ import annotations

from typing import Any

from joblib_app.context import AppContext
from joblib_app.domain.errors import JobNotFound
from joblib_app.domain.names import is_internal_name, validate_room_id
from joblib_app.limits import check_json_body
from joblib_app.models import utcnow
from joblib_app.principal import Principal
from joblib_app.realtime.events import Outbox
from joblib_app.services.access import check_visible_name, check_writable_room, visible_job
from joblib_app.services.events import record_task_available, record_task_change
from joblib_app.services.internal import dispatch_internal_task, require_internal_executor
from joblib_app.services.rows import Record
from joblib_app.store import tasks


async def submit_task(
    ctx: AppContext,
    principal: Principal,
    room_id: str,
    job_full_name: str,
    payload: dict[str, Any],
) -> tuple[Record, dict[int, int]]:
    """Queue a task of ``job_full_name`` for ``room_id``; the row and its queue position.

    A job of another (non-global) room is ``404 job-not-found``.
    """
    check_json_body(payload, ctx.settings.max_json_depth, "payload")
    validate_room_id(room_id)
    await check_writable_room(ctx, principal, room_id)
    if is_internal_name(job_full_name):
        return await _submit_internal(ctx, principal, room_id, job_full_name, payload), {}
    check_visible_name(room_id, job_full_name)
    # One atomic INSERT (it checks the job is active), then a count: no transaction
    # needed around them on PostgreSQL.
    async with ctx.db.autocommit() as conn:
        row = await tasks.submit_to_active_job(
            conn,
            job_name=job_full_name,
            room_id=room_id,
            payload=payload,
            created_by=principal.id,
            now=utcnow(),
        )
        if row is None:
            raise JobNotFound(job_full_name)
        positions = await tasks.queue_positions(conn, [row])
    outbox = Outbox()
    record_task_change(outbox, row, positions)
    record_task_available(outbox, row)
    await ctx.dispatch(outbox)
    return row, positions


async def _submit_internal(
    ctx: AppContext,
    principal: Principal,
    room_id: str,
    job_full_name: str,
    payload: dict[str, Any],
) -> Record:
    """Insert the task already claimed (no worker will), then enqueue it on the broker."""
    outbox = Outbox()
    async with ctx.db.write() as conn:
        job = await visible_job(conn, room_id, job_full_name)
        require_internal_executor(ctx, job.full_name)
        row = await tasks.insert_task(
            conn,
            job_id=job.id,
            job_name=job.full_name,
            room_id=room_id,
            payload=payload,
            created_by=principal.id,
            now=utcnow(),
        )
        # Claimed before enqueueing: the executor may start before we return. Nobody saw
        # it pending, so only the claimed state is announced.
        claimed = await tasks.mark_claimed(conn, row.id)
        assert claimed is not None  # inserted pending in this very transaction
        row = claimed
        record_task_change(outbox, row, {})
    await ctx.dispatch(outbox)
    return await dispatch_internal_task(ctx, row)
