"""``/workers``: create, list, heartbeat, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response

from joblib_app.api.deps import Ctx, CurrentPrincipal, Limit, Offset
from joblib_app.api.openapi import problems
from joblib_app.api.schemas import Page, WorkerOut, WorkerSummary
from joblib_app.cleanup import cleanup_workers
from joblib_app.domain.names import is_plain_id
from joblib_app.models import utcnow
from joblib_app.problems import forbidden, worker_not_found
from joblib_app.store import workers

router = APIRouter(tags=["workers"])


@router.post("/workers", status_code=201, summary="Create a worker")
async def create_worker(ctx: Ctx, principal: CurrentPrincipal) -> WorkerOut:
    async with ctx.db.write() as conn:
        row = await workers.create_worker(conn, principal.id, utcnow())
    return WorkerOut(id=row.id, last_heartbeat=row.last_heartbeat)


@router.get("/workers", summary="List workers")
async def list_workers(
    ctx: Ctx, principal: CurrentPrincipal, limit: Limit = 50, offset: Offset = 0
) -> Page[WorkerSummary]:
    async with ctx.db.read() as conn:
        rows, total = await workers.list_workers(conn, limit=limit, offset=offset)
    items = [
        WorkerSummary(id=r.id, last_heartbeat=r.last_heartbeat, job_count=r.job_count) for r in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.patch(
    "/workers/{worker_id}", summary="Send a worker's heartbeat", responses=problems(403, 404)
)
async def heartbeat(worker_id: str, ctx: Ctx, principal: CurrentPrincipal) -> WorkerOut:
    if not is_plain_id(worker_id):
        raise worker_not_found(worker_id)
    async with ctx.db.write() as conn:
        row = await workers.get_worker(conn, worker_id)
        if row is None:
            raise worker_not_found(worker_id)
        if row.user_id != principal.id:
            raise forbidden("Only the worker's owner may send its heartbeat")
        row = await workers.touch_worker(conn, worker_id, utcnow())
    if row is None:
        raise worker_not_found(worker_id)
    return WorkerOut(id=row.id, last_heartbeat=row.last_heartbeat)


@router.delete(
    "/workers/{worker_id}",
    status_code=204,
    summary="Delete a worker and clean up after it",
    responses=problems(403, 404),
)
async def delete_worker(worker_id: str, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    if not is_plain_id(worker_id):
        raise worker_not_found(worker_id)
    async with ctx.db.read() as conn:
        row = await workers.get_worker(conn, worker_id)
    if row is None:
        raise worker_not_found(worker_id)
    if row.user_id != principal.id and not principal.is_superuser:
        raise forbidden("Only the worker's owner or a superuser may delete it")
    await cleanup_workers(ctx, [worker_id], reason=f"deleted by {principal.id}")
    return Response(status_code=204)
