"""Task listing. Submit, claim, read and update are plain routes: ``task_routes``."""

from __future__ import annotations

from fastapi import APIRouter

from joblib_app.api.deps import Ctx, CurrentPrincipal, Limit, Offset
from joblib_app.api.openapi import problems
from joblib_app.api.privacy import check_readable_room
from joblib_app.api.schemas import Page, TaskOut
from joblib_app.models import TaskStatus
from joblib_app.names import validate_room_id
from joblib_app.store import tasks
from joblib_app.views import task_out

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
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        rows, total = await tasks.list_tasks(
            conn, room_id=room_id, status=status, limit=limit, offset=offset
        )
        positions = await tasks.queue_positions(conn, rows)
    return Page(
        items=[task_out(r, positions) for r in rows], total=total, limit=limit, offset=offset
    )
