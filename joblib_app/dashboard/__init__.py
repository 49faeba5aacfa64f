"""``<mount>/dashboard``: the operator's live page, served with its assets by the package.

* ``GET /dashboard``: the page (HTML, CSS and JavaScript from ``static/``; no CDN, no build).
* ``GET /dashboard/api/snapshot?room&status&limit``: what the page shows, as JSON.
* ``GET /dashboard/api/events?room&status&limit``: the same as Server-Sent Events
  (``event: snapshot``), sent again whenever it changes.
* ``GET /dashboard/api/tasks/{task_id}``: one task in full (payload, result).

Every route authenticates through the host's ``authenticate`` (the browser sends the
host's cookie, or a header a proxy adds) and shows only rooms the principal may read.

A stream re-reads its snapshot when a change committed in this process (the dispatch hook
:meth:`DashboardHub.changed`) and at least every ``dashboard_refresh_seconds``, which
covers changes made by other server processes and workers whose heartbeat goes stale
without anything being written. The re-read is skipped on the task path: a change costs
one comparison when nobody watches.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from sse_starlette import EventSourceResponse

from joblib_app.api.deps import Ctx, CurrentPrincipal
from joblib_app.dashboard.snapshot import MAX_TASKS, RoomFilter, build_snapshot, task_view
from joblib_app.domain.errors import ProblemError, TaskNotFound
from joblib_app.domain.statuses import TaskStatus
from joblib_app.principal import Principal
from joblib_app.realtime.events import Outbox
from joblib_app.store import tasks as task_store

# Several changes in a burst (a claim then its start) make one snapshot, not several.
COALESCE_SECONDS = 0.05
_STATIC: dict[str, tuple[str, str]] = {
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
}

RoomParam = Annotated[str | None, Query(min_length=1, max_length=255)]
StatusParam = Annotated[TaskStatus | None, Query()]
LimitParam = Annotated[int, Query(ge=1, le=MAX_TASKS)]


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


class DashboardHub:
    """Wakes this process's dashboard streams when a change is committed here."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def changed(self, outbox: Outbox) -> None:
        """Dispatch hook: cheap when nobody watches."""
        if self._event is not None and outbox.has_events:
            self._event.set()
            self._event = None

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - a bounded wait is the point
        """Return at the next change in this process, or after ``timeout`` seconds."""
        if self._event is None:
            self._event = asyncio.Event()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return


async def _snapshot_json(
    request: Request,
    principal: Principal,
    room: str | None,
    status: TaskStatus | None,
    limit: int,
) -> str:
    snapshot = await build_snapshot(
        request.app.state.joblib, principal, room=room, status=status, limit=limit
    )
    return json.dumps(snapshot, separators=(",", ":"))


def _router(hub: DashboardHub) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/dashboard")
    async def page(request: Request, principal: CurrentPrincipal) -> HTMLResponse:
        base = request.scope.get("root_path", "") + "/dashboard"
        body = _asset("index.html").replace("{{BASE}}", html.escape(base, quote=True))
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    @router.get("/dashboard/static/{name}")
    async def asset(name: str, principal: CurrentPrincipal) -> Response:
        known = _STATIC.get(name)
        if known is None:
            raise ProblemError(404, "not-found", f"No dashboard asset '{name[:100]}'")
        filename, media_type = known
        return Response(_asset(filename), media_type=media_type)

    @router.get("/dashboard/api/snapshot")
    async def snapshot(
        request: Request,
        principal: CurrentPrincipal,
        room: RoomParam = None,
        status: StatusParam = None,
        limit: LimitParam = 50,
    ) -> Response:
        body = await _snapshot_json(request, principal, room, status, limit)
        return Response(body, media_type="application/json")

    @router.get("/dashboard/api/events")
    async def events(
        request: Request,
        ctx: Ctx,
        principal: CurrentPrincipal,
        room: RoomParam = None,
        status: StatusParam = None,
        limit: LimitParam = 50,
    ) -> EventSourceResponse:
        refresh = ctx.settings.dashboard_refresh_seconds

        async def stream() -> AsyncIterator[dict[str, Any]]:
            last: str | None = None
            while True:
                body = await _snapshot_json(request, principal, room, status, limit)
                if body != last:
                    last = body
                    yield {"event": "snapshot", "data": body}
                await hub.wait(refresh)
                await asyncio.sleep(COALESCE_SECONDS)

        return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-store"})

    @router.get("/dashboard/api/tasks/{task_id}")
    async def task_detail(task_id: str, ctx: Ctx, principal: CurrentPrincipal) -> Response:
        if len(task_id) > 64:
            raise TaskNotFound(task_id[:64])
        async with ctx.db.read() as conn:
            row = await task_store.get_task(conn, task_id)
            positions = await task_store.queue_positions(conn, [row]) if row else {}
        # A room the principal may not read hides its tasks: the same answer as no task.
        if row is None or not await RoomFilter(ctx, principal).readable(row.room_id):
            raise TaskNotFound(task_id)
        body = json.dumps(task_view(row, positions, full=True), separators=(",", ":"))
        return Response(body, media_type="application/json")

    return router


def install_dashboard(api: FastAPI, hub: DashboardHub) -> None:
    """Add the dashboard's routes to the sub-app."""
    api.include_router(_router(hub))
