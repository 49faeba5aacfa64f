"""Tasks: submit, claim (with long-poll), read (with long-poll), update, list."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from joblib_app.api.deps import (
    Ctx,
    CurrentPrincipal,
    Limit,
    Offset,
    format_seconds,
    prefer_wait,
)
from joblib_app.api.guards import check_writable_room, visible_job
from joblib_app.api.schemas import (
    ClaimRequest,
    ClaimResponse,
    Page,
    TaskOut,
    TaskSubmit,
    TaskUpdate,
)
from joblib_app.context import AppContext
from joblib_app.internal.dispatch import dispatch_internal_task, require_internal_executor
from joblib_app.models import TERMINAL_STATUSES, TaskStatus, utcnow
from joblib_app.names import INTERNAL_ROOM, validate_room_id
from joblib_app.principal import Principal
from joblib_app.problems import forbidden, worker_not_found
from joblib_app.realtime.events import (
    Outbox,
    TaskAvailable,
    job_notify_channel,
    jobs_channel,
    task_notify_channel,
)
from joblib_app.store import jobs, tasks, workers
from joblib_app.task_changes import read_task as _read_task
from joblib_app.task_changes import set_task_status
from joblib_app.views import json_response, record_task_change, task_out

router = APIRouter(tags=["tasks"])

# Waiters are woken by the notifier; this re-read only covers a lost notification.
SAFETY_RECHECK_SECONDS = 5.0


@router.post("/rooms/{room_id}/tasks/{job_full_name}", status_code=202, response_model=TaskOut)
async def submit_task(
    room_id: str,
    job_full_name: str,
    body: TaskSubmit,
    request: Request,
    ctx: Ctx,
    principal: CurrentPrincipal,
) -> Response:
    """Queue a task. A job of another (non-global) room is ``404 job-not-found``."""
    validate_room_id(room_id)
    await check_writable_room(ctx, principal, room_id)
    is_internal = job_full_name.startswith(INTERNAL_ROOM + ":")
    outbox = Outbox()
    async with ctx.db.write() as conn:
        job = await visible_job(conn, room_id, job_full_name)
        if is_internal:
            require_internal_executor(ctx, job.full_name)
        row = await tasks.insert_task(
            conn,
            job_id=job.id,
            job_name=job.full_name,
            room_id=room_id,
            payload=body.payload,
            created_by=principal.id,
            now=utcnow(),
        )
        positions = await tasks.queue_positions(conn, [row])
        record_task_change(outbox, row, positions)
        if is_internal:
            # Claimed before enqueueing: the executor may start before we return.
            row = await tasks.mark_claimed(conn, row.id)
            positions = {}
            record_task_change(outbox, row, positions)
    if not is_internal:
        outbox.emit(
            TaskAvailable(job_name=job.full_name, room_id=room_id, task_id=row.id),
            jobs_channel(job.full_name),
        )
        outbox.notify(job_notify_channel(job.full_name), row.id)
    await ctx.dispatch(outbox)
    if is_internal:
        row = await dispatch_internal_task(ctx, row)
    headers = {
        "Location": f"{request.scope.get('root_path', '')}/tasks/{row.id}",
        "Retry-After": "1",
    }
    return json_response(task_out(row, positions), status_code=202, headers=headers)


async def _check_owned_worker(conn: AsyncConnection, principal: Principal, worker_id: str) -> None:
    worker = await workers.get_worker(conn, worker_id)
    if worker is None:
        raise worker_not_found(worker_id)
    if worker.user_id != principal.id:
        raise forbidden("Only the worker's owner may claim tasks with it")


async def _claim_once(
    ctx: AppContext, worker_id: str, *, check_owner: Principal | None = None
) -> Row | None:
    async with ctx.db.write() as conn:
        # The ownership check shares the claim's transaction: one round of the write lock.
        if check_owner is not None:
            await _check_owned_worker(conn, check_owner, worker_id)
        row = await tasks.claim_next(conn, worker_id)
    if row is not None:
        outbox = Outbox()
        record_task_change(outbox, row, {})
        await ctx.dispatch(outbox)
    return row


@router.post("/tasks/claim", response_model=ClaimResponse)
async def claim_task(
    body: ClaimRequest,
    request: Request,
    ctx: Ctx,
    principal: CurrentPrincipal,
) -> Response:
    """Claim the oldest pending task of the worker's jobs.

    With ``Prefer: wait=N`` and nothing pending, wait until a task is submitted for one of
    the worker's jobs (in any server process) or N seconds pass.
    """
    row = await _claim_once(ctx, body.worker_id, check_owner=principal)
    wait = prefer_wait(request)
    headers: dict[str, str] = {}
    if row is None and wait:
        capped = min(wait, ctx.settings.long_poll_max_wait_seconds)
        headers["Preference-Applied"] = f"wait={format_seconds(capped)}"
        async with ctx.db.read() as conn:
            names = await jobs.job_names_of_worker(conn, body.worker_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + capped
        async with ctx.notifier.listen([job_notify_channel(n) for n in names]) as listener:
            while True:
                row = await _claim_once(ctx, body.worker_id)
                remaining = deadline - loop.time()
                if row is not None or remaining <= 0:
                    break
                await listener.wait(min(remaining, SAFETY_RECHECK_SECONDS))
    claimed = ClaimResponse(task=task_out(row, {}) if row is not None else None)
    return json_response(claimed, headers=headers)


def _is_terminal(row: Row) -> bool:
    return TaskStatus(row.status) in TERMINAL_STATUSES


@router.get("/tasks/{task_id}", response_model=TaskOut)
async def get_task(
    task_id: str, request: Request, ctx: Ctx, principal: CurrentPrincipal
) -> Response:
    """Read a task; with ``Prefer: wait=N``, return as soon as it is terminal."""
    wait = prefer_wait(request)
    if not wait:
        row, positions = await _read_task(ctx, task_id)
        return json_response(task_out(row, positions))
    capped = min(wait, ctx.settings.long_poll_max_wait_seconds)
    headers = {"Preference-Applied": f"wait={format_seconds(capped)}"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + capped
    # Subscribe before reading, so a change between the read and the wait still wakes us.
    async with ctx.notifier.listen([task_notify_channel(task_id)]) as listener:
        row, positions = await _read_task(ctx, task_id)
        while not _is_terminal(row):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await listener.wait(min(remaining, SAFETY_RECHECK_SECONDS))
            row, positions = await _read_task(ctx, task_id)
    return json_response(task_out(row, positions), headers=headers)


def _may_update(principal: Principal, row: Row, target: TaskStatus) -> bool:
    """``row`` carries ``worker_user_id`` (see ``tasks.get_task_with_owner``)."""
    if principal.is_superuser:
        return True
    if target is TaskStatus.CANCELLED and row.created_by == principal.id:
        return True
    return row.worker_user_id is not None and row.worker_user_id == principal.id


@router.patch("/tasks/{task_id}", response_model=TaskOut)
async def update_task(
    task_id: str, body: TaskUpdate, ctx: Ctx, principal: CurrentPrincipal
) -> Response:
    """Move a task along the state machine: the claiming worker's owner, a superuser, or
    (to cancel) the user who submitted it."""

    async def authorize(row: Row) -> None:
        if not _may_update(principal, row, body.status):
            raise forbidden("Only the claiming worker's owner or a superuser may update this task")

    row, positions = await set_task_status(
        ctx, task_id, body.status, error=body.error, authorize=authorize
    )
    return json_response(task_out(row, positions))


@router.get("/rooms/{room_id}/tasks")
async def list_room_tasks(
    room_id: str,
    ctx: Ctx,
    principal: CurrentPrincipal,
    status: TaskStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[TaskOut]:
    validate_room_id(room_id)
    async with ctx.db.read() as conn:
        rows, total = await tasks.list_tasks(
            conn, room_id=room_id, status=status, limit=limit, offset=offset
        )
        positions = await tasks.queue_positions(conn, rows)
    return Page(
        items=[task_out(r, positions) for r in rows], total=total, limit=limit, offset=offset
    )
