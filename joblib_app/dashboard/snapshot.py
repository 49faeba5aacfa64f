"""What the dashboard shows one principal: a snapshot read in one database connection.

Rooms are filtered with the config's ``can_read_room`` (``@global`` and ``@internal`` are
visible from every room, as in the REST API); a superuser sees everything. Every list is
bounded, so a snapshot costs the same with a hundred tasks or a million.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from joblib_app.api.views import task_out
from joblib_app.context import AppContext
from joblib_app.domain.names import RESERVED_ROOMS
from joblib_app.domain.statuses import TaskStatus
from joblib_app.models import (
    job_table,
    link_table,
    provider_table,
    task_table,
    utcnow,
    worker_table,
)
from joblib_app.principal import Principal
from joblib_app.store import tasks as task_store
from joblib_app.store.connection import Connection, Row

MAX_ROWS = 200  # jobs, workers, providers per snapshot
MAX_TASKS = 100
# A principal who may read few rooms: stop looking for their recent tasks after this many.
MAX_TASKS_SCANNED = 2000
RESULT_PREVIEW_CHARS = 200
_COUNTED = (TaskStatus.PENDING.value, TaskStatus.CLAIMED.value, TaskStatus.RUNNING.value)
_J, _W, _P, _T, _L = job_table.c, worker_table.c, provider_table.c, task_table.c, link_table.c


class RoomFilter:
    """Which rooms the principal may read, asked once per room and snapshot."""

    def __init__(self, ctx: AppContext, principal: Principal) -> None:
        self._guard: Callable[[Principal, str], Awaitable[bool]] | None = (
            None if principal.is_superuser else ctx.config.can_read_room
        )
        self._principal = principal
        self._known: dict[str, bool] = {}

    async def readable(self, room_id: str) -> bool:
        known = self._known.get(room_id)
        if known is None:
            known = (
                self._guard is None
                or room_id in RESERVED_ROOMS
                or bool(await self._guard(self._principal, room_id))
            )
            self._known[room_id] = known
        return known

    def seen(self) -> list[str]:
        return [room for room, ok in self._known.items() if ok]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def task_view(row: Row, positions: dict[int, int], *, full: bool) -> dict[str, Any]:
    """The task's JSON (as ``GET /tasks/{id}`` answers it) plus the seconds it ran, once
    finished (the page counts a running task's time itself: a snapshot that changed every
    time it is read would be sent on every refresh).

    In lists (``full=False``) the payload is left out and a result is cut to a preview.
    """
    view = task_out(row, positions).model_dump(mode="json")
    started, finished = row.started_at, row.completed_at
    view["duration_seconds"] = (
        (finished - started).total_seconds()
        if started is not None and finished is not None
        else None
    )
    if not full:
        view.pop("payload", None)
        if view.get("result") is not None:
            text = json.dumps(view["result"])
            view["result"] = (
                text if len(text) <= RESULT_PREVIEW_CHARS else text[:RESULT_PREVIEW_CHARS] + "…"
            )
    return view


async def _recent_tasks(
    conn: Connection,
    rooms: RoomFilter,
    *,
    room: str | None,
    status: TaskStatus | None,
    limit: int,
) -> list[Row]:
    conditions = []
    if room is not None:
        conditions.append(_T.room_id == room)
    if status is not None:
        conditions.append(task_store.status_is(_T.status, status.value))
    found: list[Row] = []
    before: int | None = None
    scanned = 0
    while len(found) < limit and scanned < MAX_TASKS_SCANNED:
        page_conditions = list(conditions)
        if before is not None:
            page_conditions.append(_T.seq < before)
        stmt = (
            select(*task_store.TASK_COLUMNS)
            .where(*page_conditions)
            .order_by(_T.seq.desc())
            .limit(limit)
        )
        page = (await conn.execute(stmt)).all()
        if not page:
            break
        scanned += len(page)
        before = page[-1].seq
        for row in page:
            if await rooms.readable(row.room_id):
                found.append(row)
    return found[:limit]


async def build_snapshot(
    ctx: AppContext,
    principal: Principal,
    *,
    room: str | None = None,
    status: TaskStatus | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """Workers, jobs with their queue counts, recent tasks and providers the principal may see,
    optionally of one room and (tasks) of one status."""
    rooms = RoomFilter(ctx, principal)
    if room is not None and not await rooms.readable(room):
        room_ok = False
    else:
        room_ok = True
    stale_before = utcnow() - timedelta(seconds=ctx.settings.worker_timeout_seconds)
    async with ctx.db.read() as conn:
        job_rows = (
            await conn.execute(
                select(_J.id, _J.room_id, _J.category, _J.name, _J.full_name)
                .where(_J.is_deleted.is_(False))
                .order_by(_J.seq.desc())
                .limit(MAX_ROWS)
            )
        ).all()
        jobs_seen = [
            job
            for job in job_rows
            if (room is None or job.room_id == room) and await rooms.readable(job.room_id)
        ]
        job_ids = [job.id for job in jobs_seen]
        counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_COUNTED, 0))
        links: dict[str, list[str]] = defaultdict(list)
        if job_ids:
            count_rows = (
                await conn.execute(
                    select(_T.job_id, _T.room_id, _T.status, func.count())
                    .where(_T.job_id.in_(job_ids), task_store.status_is(_T.status, *_COUNTED))
                    .group_by(_T.job_id, _T.room_id, _T.status)
                )
            ).all()
            for job_id, task_room, task_status, count in count_rows:
                # A @global job's tasks come from many rooms: count the readable ones only.
                if (room is None or task_room == room) and await rooms.readable(task_room):
                    counts[job_id][task_status] += count
            for job_id, worker_id in await conn.execute(
                select(_L.job_id, _L.worker_id).where(_L.job_id.in_(job_ids))
            ):
                links[job_id].append(worker_id)

        worker_rows = (
            await conn.execute(
                select(_W.id, _W.user_id, _W.last_heartbeat)
                .order_by(_W.created_at.desc(), _W.id)
                .limit(MAX_ROWS)
            )
        ).all()
        served: dict[str, list[str]] = defaultdict(list)
        if worker_rows:
            for worker_id, full_name in await conn.execute(
                select(_L.worker_id, _J.full_name)
                .join(job_table, _J.id == _L.job_id)
                .where(_L.worker_id.in_([w.id for w in worker_rows]))
                .order_by(_J.full_name)
            ):
                served[worker_id].append(full_name)
        visible_jobs = {job.full_name for job in jobs_seen}

        provider_rows = (
            await conn.execute(
                select(_P.id, _P.room_id, _P.category, _P.name, _P.full_name, _P.content_type)
                .add_columns(_P.worker_id, _P.user_id, _P.created_at)
                .order_by(_P.seq.desc())
                .limit(MAX_ROWS)
            )
        ).all()
        task_rows = (
            await _recent_tasks(conn, rooms, room=room, status=status, limit=limit)
            if room_ok
            else []
        )
        positions = await task_store.queue_positions(conn, task_rows)

    def owner(user_id: str) -> str:
        return user_id if principal.is_superuser or user_id == principal.id else "another user"

    workers = []
    for w in worker_rows:
        names = served.get(w.id, [])
        mine = w.user_id == principal.id
        shown = names if principal.is_superuser or mine else [n for n in names if n in visible_jobs]
        if room is None and not (principal.is_superuser or mine or shown):
            continue
        if room is not None and not any(n in visible_jobs for n in names):
            continue
        workers.append(
            {
                "id": w.id,
                "owner": owner(w.user_id),
                "last_heartbeat": _iso(w.last_heartbeat),
                "live": w.last_heartbeat >= stale_before,
                "jobs": shown,
            }
        )
    providers = [
        {
            "id": p.id,
            "room_id": p.room_id,
            "category": p.category,
            "name": p.name,
            "full_name": p.full_name,
            "content_type": p.content_type,
            "worker_id": p.worker_id,
            "owner": owner(p.user_id),
            "created_at": _iso(p.created_at),
        }
        for p in provider_rows
        if (room is None or p.room_id == room) and await rooms.readable(p.room_id)
    ]
    jobs = [
        {
            "full_name": job.full_name,
            "room_id": job.room_id,
            "category": job.category,
            "name": job.name,
            "workers": links.get(job.id, []),
            **counts[job.id],
        }
        for job in jobs_seen
    ]
    room_ids = set(rooms.seen()) | {job.room_id for job in jobs_seen}
    return {
        "principal": {"id": principal.id, "is_superuser": principal.is_superuser},
        "filters": {"room": room, "status": status.value if status else None},
        "rooms": sorted(room_ids),
        "workers": workers,
        "jobs": jobs,
        "tasks": [task_view(row, positions, full=False) for row in task_rows],
        "providers": providers,
        "worker_timeout_seconds": ctx.settings.worker_timeout_seconds,
    }
