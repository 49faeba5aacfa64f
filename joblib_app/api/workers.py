"""``/workers``: create, list, heartbeat, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response

from joblib_app.api.deps import Ctx, CurrentPrincipal, Limit, Offset
from joblib_app.api.openapi import problems
from joblib_app.api.schemas import Page, WorkerOut, WorkerSummary
from joblib_app.services import workers as worker_service

router = APIRouter(tags=["workers"])


@router.post("/workers", status_code=201, summary="Create a worker")
async def create_worker(ctx: Ctx, principal: CurrentPrincipal) -> WorkerOut:
    row = await worker_service.create_worker(ctx, principal)
    return WorkerOut(id=row.id, last_heartbeat=row.last_heartbeat)


@router.get("/workers", summary="List workers")
async def list_workers(
    ctx: Ctx, principal: CurrentPrincipal, limit: Limit = 50, offset: Offset = 0
) -> Page[WorkerSummary]:
    rows, total = await worker_service.list_workers(ctx, limit=limit, offset=offset)
    items = [
        WorkerSummary(id=r.id, last_heartbeat=r.last_heartbeat, job_count=r.job_count) for r in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.patch(
    "/workers/{worker_id}", summary="Send a worker's heartbeat", responses=problems(403, 404)
)
async def heartbeat(worker_id: str, ctx: Ctx, principal: CurrentPrincipal) -> WorkerOut:
    row = await worker_service.heartbeat(ctx, principal, worker_id)
    return WorkerOut(id=row.id, last_heartbeat=row.last_heartbeat)


@router.delete(
    "/workers/{worker_id}",
    status_code=204,
    summary="Delete a worker and clean up after it",
    responses=problems(403, 404),
)
async def delete_worker(worker_id: str, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    await worker_service.delete_worker(ctx, principal, worker_id)
    return Response(status_code=204)
