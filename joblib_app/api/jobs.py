"""``/rooms/{room_id}/jobs``: register, list, inspect; the room's workers."""

from __future__ import annotations

from fastapi import APIRouter, Response

from joblib_app.api.deps import Ctx, CurrentPrincipal, Limit, Offset
from joblib_app.api.openapi import problems
from joblib_app.api.schemas import (
    JobOut,
    JobRegister,
    JobRegistered,
    JobSummary,
    Page,
    TaskOut,
    WorkerSummary,
)
from joblib_app.api.views import job_out, task_out
from joblib_app.domain.statuses import TaskStatus
from joblib_app.services import jobs as job_service

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
    registered = await job_service.register_job(
        ctx,
        principal,
        room_id,
        category=body.category,
        name=body.name,
        schema=body.schema_,
        worker_id=body.worker_id,
        max_attempts=body.max_attempts,
        timeout_seconds=body.timeout_seconds,
    )
    if not registered.created:
        response.status_code = 200
    out = job_out(registered.job, registered.workers)
    return JobRegistered(**out.model_dump(by_alias=True), worker_id=registered.worker_id)


@router.get(
    "/rooms/{room_id}/jobs", summary="List the jobs visible in a room", responses=problems(400)
)
async def list_jobs(
    room_id: str, ctx: Ctx, principal: CurrentPrincipal, limit: Limit = 50, offset: Offset = 0
) -> Page[JobSummary]:
    listed, total = await job_service.list_jobs(ctx, principal, room_id, limit=limit, offset=offset)
    items = [
        JobSummary(full_name=r.full_name, category=r.category, name=r.name, workers=workers)
        for r, workers in listed
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/rooms/{room_id}/jobs/{job_full_name}", summary="Read a job", responses=problems(400, 404)
)
async def get_job(
    room_id: str, job_full_name: str, ctx: Ctx, principal: CurrentPrincipal
) -> JobOut:
    job, workers = await job_service.get_job(ctx, principal, room_id, job_full_name)
    return job_out(job, workers)


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
    rows, positions, total = await job_service.list_tasks(
        ctx,
        principal,
        room_id,
        job_full_name=job_full_name,
        status=status,
        limit=limit,
        offset=offset,
    )
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
    rows, total = await job_service.list_room_workers(
        ctx, principal, room_id, limit=limit, offset=offset
    )
    items = [
        WorkerSummary(id=r.id, last_heartbeat=r.last_heartbeat, job_count=r.job_count) for r in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)
