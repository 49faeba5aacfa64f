"""Task listing. Submit, claim, read and update are plain routes: ``task_routes``."""

from __future__ import annotations

from fastapi import APIRouter

from joblib_app.api.deps import Ctx, CurrentPrincipal, Limit, Offset
from joblib_app.api.openapi import problems
from joblib_app.api.schemas import Page, TaskOut
from joblib_app.api.views import task_out
from joblib_app.domain.statuses import TaskStatus
from joblib_app.services.jobs import list_tasks

router = APIRouter(tags=["tasks"])


@router.get("/rooms/{room_id}/tasks", summary="List a room's tasks", responses=problems(400))
async def list_room_tasks(
    room_id: str,
    ctx: Ctx,
    principal: CurrentPrincipal,
    status: TaskStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[TaskOut]:
    rows, positions, total = await list_tasks(
        ctx, principal, room_id, status=status, limit=limit, offset=offset
    )
    return Page(
        items=[task_out(r, positions) for r in rows], total=total, limit=limit, offset=offset
    )
