"""Room privacy: the host's ``can_read_room`` and ``can_serve_job`` decisions, applied.

``can_read_room`` guards every read of a room: Socket.IO ``join_room`` and the REST
reads (its jobs, tasks, workers, providers, and single tasks). ``can_serve_job`` decides
who may register a worker for a job. Without them (the default) every authenticated
principal may do both.
"""

from __future__ import annotations

from sqlalchemy import Row

from joblib_app.context import AppContext
from joblib_app.principal import Principal
from joblib_app.problems import forbidden, task_not_found
from joblib_app.store import workers


async def may_read_room(ctx: AppContext, principal: Principal, room_id: str) -> bool:
    """The host's ``can_read_room`` verdict (``True`` without one)."""
    guard = ctx.config.can_read_room
    return guard is None or await guard(principal, room_id)


async def check_readable_room(ctx: AppContext, principal: Principal, room_id: str) -> None:
    """``403 forbidden`` unless ``principal`` may read ``room_id``."""
    if not await may_read_room(ctx, principal, room_id):
        raise forbidden(f"Not allowed to read room '{room_id}'")


async def check_readable_task(ctx: AppContext, principal: Principal, row: Row) -> None:
    """``404 task-not-found`` unless ``principal`` may see this task.

    Allowed: whoever may read its room, the user who submitted it, and the owner of the
    worker that claimed it. 404 rather than 403, so that task ids of private rooms reveal
    nothing.
    """
    if ctx.config.can_read_room is None or row.created_by == principal.id:
        return
    if await may_read_room(ctx, principal, row.room_id):
        return
    if row.worker_id is not None:
        async with ctx.db.read() as conn:
            worker = await workers.get_worker(conn, row.worker_id)
        if worker is not None and worker.user_id == principal.id:
            return
    raise task_not_found(row.id)


async def check_may_serve(
    ctx: AppContext, principal: Principal, room_id: str, job_full_name: str
) -> None:
    """``403 forbidden`` unless the host's ``can_serve_job`` lets ``principal`` register a
    worker for ``job_full_name``."""
    guard = ctx.config.can_serve_job
    if guard is not None and not await guard(principal, room_id, job_full_name):
        raise forbidden(f"Not allowed to serve job '{job_full_name}'")
