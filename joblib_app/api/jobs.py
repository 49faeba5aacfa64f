"""``/rooms/{room_id}/jobs``: register, list, inspect; the room's workers."""

from __future__ import annotations

from fastapi import APIRouter, Response

from joblib_app.api.deps import Ctx, CurrentPrincipal, Limit, Offset
from joblib_app.api.guards import (
    check_category,
    check_writable_room,
    owned_worker_or_new,
    visible_job,
)
from joblib_app.api.long_poll import notify_worker_jobs_changed
from joblib_app.api.openapi import problems
from joblib_app.api.privacy import check_may_serve, check_readable_room
from joblib_app.api.schemas import (
    JobOut,
    JobRegister,
    JobRegistered,
    JobSummary,
    Page,
    TaskOut,
    WorkerSummary,
)
from joblib_app.limits import check_json_body
from joblib_app.models import TaskStatus, utcnow
from joblib_app.names import RESERVED_ROOMS, make_full_name, validate_room_id, visible_rooms
from joblib_app.problems import ProblemError, forbidden
from joblib_app.realtime.events import JobsInvalidate, Outbox, room_channel
from joblib_app.store import jobs, tasks, workers
from joblib_app.views import job_out, task_out

router = APIRouter(tags=["jobs"])


@router.put(
    "/rooms/{room_id}/jobs",
    status_code=201,
    summary="Register a job (or link a worker to it)",
    responses={
        201: {"description": "Registered (new, or a deleted job reactivated)"},
        200: {"model": JobRegistered, "description": "Already registered with this schema"},
        **problems(400, 403, 404, 409),
    },
)
async def register_job(
    room_id: str,
    body: JobRegister,
    response: Response,
    ctx: Ctx,
    principal: CurrentPrincipal,
) -> JobRegistered:
    validate_room_id(room_id)
    if room_id in RESERVED_ROOMS and not principal.is_superuser:
        raise forbidden(f"Registering jobs in {room_id} requires a superuser")
    check_json_body(body.schema_, ctx.settings.max_json_depth, "schema")
    check_category(body.category, ctx.settings.allowed_categories)
    await check_writable_room(ctx, principal, room_id)
    full_name = make_full_name(room_id, body.category, body.name)
    await check_may_serve(ctx, principal, room_id, full_name)
    now = utcnow()
    outbox = Outbox()
    async with ctx.db.write() as conn:
        worker_id = await owned_worker_or_new(conn, principal, body.worker_id, now)
        created = await jobs.insert_job(
            conn,
            room_id=room_id,
            category=body.category,
            name=body.name,
            full_name=full_name,
            schema=body.schema_,
            now=now,
        )
        reactivated = False
        if created is not None:
            job = created
        else:
            existing = await jobs.get_job(conn, full_name)
            assert existing is not None  # the insert conflicted on this very name
            if existing.is_deleted:
                job = await jobs.reactivate_job(conn, existing.id, body.schema_, now)
                reactivated = True
            elif existing.schema != body.schema_:
                raise ProblemError(
                    409,
                    "schema-conflict",
                    f"Job '{full_name}' is registered with a different schema",
                )
            else:
                job = existing
        await tasks.set_retry_policy(conn, job.id, body.max_attempts, body.timeout_seconds)
        linked = await jobs.link_worker(conn, worker_id, job.id)
        linked_workers = (await jobs.workers_of_jobs(conn, [job.id]))[job.id]
    if created is None and not reactivated:
        response.status_code = 200
    if linked:
        notify_worker_jobs_changed(outbox, worker_id)
    if created is not None or linked or job.schema != body.schema_:
        outbox.emit(JobsInvalidate(), room_channel(room_id))
    await ctx.dispatch(outbox)
    out = job_out(job, linked_workers)
    return JobRegistered(**out.model_dump(by_alias=True), worker_id=worker_id)


@router.get(
    "/rooms/{room_id}/jobs", summary="List the jobs visible in a room", responses=problems(400)
)
async def list_jobs(
    room_id: str, ctx: Ctx, principal: CurrentPrincipal, limit: Limit = 50, offset: Offset = 0
) -> Page[JobSummary]:
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        rows, total = await jobs.list_jobs(conn, visible_rooms(room_id), limit=limit, offset=offset)
        linked = await jobs.workers_of_jobs(conn, [r.id for r in rows])
    items = [
        JobSummary(full_name=r.full_name, category=r.category, name=r.name, workers=linked[r.id])
        for r in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/rooms/{room_id}/jobs/{job_full_name}", summary="Read a job", responses=problems(400, 404)
)
async def get_job(
    room_id: str, job_full_name: str, ctx: Ctx, principal: CurrentPrincipal
) -> JobOut:
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        job = await visible_job(conn, room_id, job_full_name)
        linked = await jobs.workers_of_jobs(conn, [job.id])
    return job_out(job, linked[job.id])


@router.get(
    "/rooms/{room_id}/jobs/{job_full_name}/tasks",
    summary="List a job's tasks in a room",
    responses=problems(400, 404),
)
async def list_job_tasks(
    room_id: str,
    job_full_name: str,
    ctx: Ctx,
    principal: CurrentPrincipal,
    status: TaskStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[TaskOut]:
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        job = await visible_job(conn, room_id, job_full_name)
        rows, total = await tasks.list_tasks(
            conn, room_id=room_id, job_id=job.id, status=status, limit=limit, offset=offset
        )
        positions = await tasks.queue_positions(conn, rows)
    items = [task_out(r, positions) for r in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/rooms/{room_id}/workers",
    summary="List the workers serving jobs visible in a room",
    responses=problems(400),
)
async def list_room_workers(
    room_id: str, ctx: Ctx, principal: CurrentPrincipal, limit: Limit = 50, offset: Offset = 0
) -> Page[WorkerSummary]:
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        rows, total = await workers.list_workers_in_rooms(
            conn, visible_rooms(room_id), limit=limit, offset=offset
        )
    items = [
        WorkerSummary(id=r.id, last_heartbeat=r.last_heartbeat, job_count=r.job_count) for r in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)
