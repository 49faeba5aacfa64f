"""Tasks: submit, claim (with long-poll), read (with long-poll), update.

These run once or more per task for every worker, so they are plain routes
(:mod:`joblib_app.api.plain`); the contract is the same as for the FastAPI routes.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from joblib_app.api.guards import check_visible_name, check_writable_room, visible_job
from joblib_app.api.long_poll import STOPPING, claim_long_poll, until_stopping
from joblib_app.api.openapi import prefer_wait_parameter
from joblib_app.api.plain import PlainRequest, PlainResponse, PlainRoute, route
from joblib_app.api.privacy import check_readable_task
from joblib_app.api.schemas import ClaimRequest, ClaimResponse, TaskOut, TaskSubmit, TaskUpdate
from joblib_app.context import AppContext
from joblib_app.domain.names import is_plain_id
from joblib_app.domain.prefer import format_seconds, parse_prefer_wait
from joblib_app.internal.dispatch import dispatch_internal_task, require_internal_executor
from joblib_app.leases import ClientGone, release_undelivered_claim
from joblib_app.limits import check_json_body
from joblib_app.models import TERMINAL_STATUSES, TaskStatus, utcnow
from joblib_app.names import INTERNAL_ROOM, validate_room_id
from joblib_app.principal import Principal
from joblib_app.problems import (
    ProblemError,
    forbidden,
    job_not_found,
    validation_problem,
    worker_not_found,
)
from joblib_app.realtime.events import (
    Outbox,
    TaskAvailable,
    job_notify_channel,
    jobs_channel,
    task_notify_channel,
)
from joblib_app.settings import JobLibSettings
from joblib_app.store import tasks, workers
from joblib_app.task_changes import read_task, set_task_status
from joblib_app.views import claim_json, record_task_change, task_json

# Waiters are woken by the notifier; this re-read only covers a lost notification.
SAFETY_RECHECK_SECONDS = 5.0


def _wait_seconds(request: PlainRequest) -> float | None:
    header = request.header(b"prefer")
    return parse_prefer_wait(header.decode("latin-1")) if header else None


async def submit_task(request: PlainRequest) -> PlainResponse:
    """``POST /rooms/{room_id}/tasks/{job_full_name}``: queue a task (``202``).

    A job of another (non-global) room is ``404 job-not-found``.
    """
    ctx = request.ctx
    room_id = request.path_params["room_id"]
    job_full_name = request.path_params["job_full_name"]
    principal = await request.principal()
    body = await request.json_body(TaskSubmit)
    check_json_body(body.payload, ctx.settings.max_json_depth, "payload")
    validate_room_id(room_id)
    await check_writable_room(ctx, principal, room_id)
    positions: dict[int, int] = {}
    if job_full_name.startswith(INTERNAL_ROOM + ":"):
        row = await _submit_internal(ctx, principal, room_id, job_full_name, body)
    else:
        check_visible_name(room_id, job_full_name)
        # One atomic INSERT (it checks the job is active), then a count: no transaction
        # needed around them on PostgreSQL.
        async with ctx.db.autocommit() as conn:
            row = await tasks.submit_to_active_job(
                conn,
                job_name=job_full_name,
                room_id=room_id,
                payload=body.payload,
                created_by=principal.id,
                now=utcnow(),
            )
            if row is None:
                raise job_not_found(job_full_name)
            positions = await tasks.queue_positions(conn, [row])
        outbox = Outbox()
        record_task_change(outbox, row, positions)
        outbox.emit(
            TaskAvailable(job_name=job_full_name, room_id=room_id, task_id=row.id),
            jobs_channel(job_full_name),
        )
        outbox.notify(job_notify_channel(job_full_name), row.id)
        await ctx.dispatch(outbox)
    headers = {
        "Location": f"{request.scope.get('root_path', '')}/tasks/{row.id}",
        "Retry-After": "1",
    }
    return PlainResponse(task_json(row, positions), status=202, headers=headers)


async def _submit_internal(
    ctx: AppContext, principal: Principal, room_id: str, job_full_name: str, body: TaskSubmit
) -> Row:
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
            payload=body.payload,
            created_by=principal.id,
            now=utcnow(),
        )
        # Claimed before enqueueing: the executor may start before we return. Nobody saw
        # it pending, so only the claimed state is announced.
        row = await tasks.mark_claimed(conn, row.id)
        record_task_change(outbox, row, {})
    await ctx.dispatch(outbox)
    return await dispatch_internal_task(ctx, row)


async def _check_owned_worker(conn: AsyncConnection, principal: Principal, worker_id: str) -> None:
    worker = await workers.get_worker(conn, worker_id)
    if worker is None:
        raise worker_not_found(worker_id)
    if worker.user_id != principal.id:
        raise forbidden("Only the worker's owner may claim tasks with it")


async def _claim_once(
    ctx: AppContext, worker_id: str, *, check_owner: Principal | None = None
) -> Row | None:
    # The claim is one atomic statement, which checks the owner too; only when nothing was
    # claimed is the worker read, to tell "not yours" (403/404) from "nothing pending".
    async with ctx.db.autocommit() as conn:
        owner_id = check_owner.id if check_owner is not None else None
        row = await tasks.claim_next(conn, worker_id, owner_id=owner_id)
        if row is None and check_owner is not None:
            await _check_owned_worker(conn, check_owner, worker_id)
    if row is not None:
        outbox = Outbox()
        record_task_change(outbox, row, {})
        await ctx.dispatch(outbox)
    return row


async def claim_task(request: PlainRequest) -> PlainResponse:
    """``POST /tasks/claim``: claim the oldest pending task of the worker's jobs.

    With ``Prefer: wait=N`` and nothing pending, wait until a task is submitted for one of
    the worker's jobs (in any server process) or N seconds pass.
    """
    ctx = request.ctx
    principal = await request.principal()
    body = await request.json_body(ClaimRequest)
    if not is_plain_id(body.worker_id):
        # Longer than any worker id: PostgreSQL would refuse it as the claim's new value.
        raise worker_not_found(body.worker_id)
    row = await _claim_once(ctx, body.worker_id, check_owner=principal)
    wait = _wait_seconds(request)
    headers: dict[str, str] = {}
    if row is None and wait:
        capped = min(wait, ctx.settings.long_poll_max_wait_seconds)
        headers["Preference-Applied"] = f"wait={format_seconds(capped)}"
        # A client that hung up (killed worker, client timeout) is never given a task.
        async with ClientGone(request.receive) as client:
            row = await claim_long_poll(
                ctx,
                body.worker_id,
                capped,
                functools.partial(_claim_once, ctx, body.worker_id),
                client=client,
            )
            if row is not None and client.gone:
                await release_undelivered_claim(ctx, row)
                row = None
    return PlainResponse(claim_json(row), headers=headers)


_UUID = TypeAdapter(uuid.UUID)


def task_id_param(request: PlainRequest) -> str:
    """The path's task id in canonical form; not a UUID is ``422``, as the reference's
    ``UUID`` path parameter answers (the same error FastAPI gives)."""
    raw = request.path_params["task_id"]
    try:
        return str(_UUID.validate_python(raw))
    except ValidationError as exc:
        raise validation_problem(
            [{"loc": ["path", "task_id"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        ) from exc


def _is_terminal(row: Row) -> bool:
    return TaskStatus(row.status) in TERMINAL_STATUSES


async def get_task(request: PlainRequest) -> PlainResponse:
    """``GET /tasks/{task_id}``; with ``Prefer: wait=N``, answer once it is terminal."""
    ctx = request.ctx
    principal = await request.principal()
    task_id = task_id_param(request)
    wait = _wait_seconds(request)
    if not wait:
        row, positions = await read_task(ctx, task_id)
        await check_readable_task(ctx, principal, row)
        return PlainResponse(task_json(row, positions))
    capped = min(wait, ctx.settings.long_poll_max_wait_seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + capped
    # Subscribe before reading, so a change between the read and the wait still wakes us.
    async with ctx.notifier.listen([task_notify_channel(task_id)]) as listener:
        row, positions = await read_task(ctx, task_id)
        await check_readable_task(ctx, principal, row)
        if _is_terminal(row):
            # Nothing to wait for: answered at once, so the wait was not applied.
            return PlainResponse(task_json(row, positions))
        while not _is_terminal(row):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            woken = await until_stopping(ctx, listener.wait(min(remaining, SAFETY_RECHECK_SECONDS)))
            row, positions = await read_task(ctx, task_id)
            if woken is STOPPING:
                break
    headers = {"Preference-Applied": f"wait={format_seconds(capped)}"}
    return PlainResponse(task_json(row, positions), headers=headers)


async def update_task(request: PlainRequest) -> PlainResponse:
    """``PATCH /tasks/{task_id}``: move a task along the state machine.

    Allowed to the claiming worker's owner, a superuser, or (to cancel) the submitter.
    """
    principal = await request.principal()
    task_id = task_id_param(request)
    settings = request.ctx.settings
    body = await request.json_body(TaskUpdate, limit=task_update_body_limit(settings))
    reported = body.reported()
    if "result" in reported:
        check_result_size(reported["result"], settings.max_task_result_bytes)
    row, positions = await set_task_status(
        request.ctx,
        task_id,
        body.status,
        error=body.error,
        actor=principal,
        reported=reported,
    )
    return PlainResponse(task_json(row, positions))


def task_update_body_limit(settings: JobLibSettings) -> int:
    """A task update's body limit: the ordinary one plus room for the largest result."""
    return settings.max_request_body_bytes + settings.max_task_result_bytes


def check_result_size(result: Any, limit: int) -> None:
    """``413`` when the result's compact JSON is larger than ``limit`` bytes."""
    size = len(pydantic_core.to_json(result))
    if size > limit:
        raise ProblemError(
            413,
            "content-too-large",
            f"The task result is {size} bytes of JSON, more than max_task_result_bytes ({limit})",
            title="Content too large",
        )


TASK_ROUTES: list[PlainRoute] = [
    route(
        "POST",
        "/rooms/{room_id}/tasks/{job_full_name}",
        submit_task,
        body=TaskSubmit,
        response=TaskOut,
        status=202,
        summary="Submit a task to a job",
        errors=(400, 403, 404, 503),
        response_headers={
            "Location": "The task's URL: `<mount>/tasks/{id}`",
            "Retry-After": "Seconds to wait before reading the task",
        },
    ),
    route(
        "POST",
        "/tasks/claim",
        claim_task,
        body=ClaimRequest,
        response=ClaimResponse,
        summary="Claim the oldest pending task of a worker's jobs",
        errors=(403, 404),
        parameters=(prefer_wait_parameter("wait up to N seconds for a task to claim"),),
        response_headers={"Preference-Applied": "`wait=N` when the claim waited"},
    ),
    route(
        "GET",
        "/tasks/{task_id}",
        get_task,
        response=TaskOut,
        summary="Read a task",
        errors=(404, 422),
        parameters=(prefer_wait_parameter("wait up to N seconds for the task to finish"),),
        response_headers={"Preference-Applied": "`wait=N` when the read waited"},
    ),
    route(
        "PATCH",
        "/tasks/{task_id}",
        update_task,
        body=TaskUpdate,
        response=TaskOut,
        summary="Change a task's status",
        errors=(403, 404, 409),
    ),
]
