"""Checks shared by the routers: categories, room guards, ownership, visibility."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from fastapi import HTTPException
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from joblib_app.context import AppContext
from joblib_app.names import parse_full_name, visible_rooms
from joblib_app.principal import Principal
from joblib_app.problems import ProblemError, invalid_job_name, job_not_found, worker_not_found
from joblib_app.store import jobs, workers


def check_category(category: str, allowed: Collection[str] | None) -> None:
    if allowed is not None and category not in allowed:
        raise ProblemError(
            400,
            "invalid-category",
            f"Category '{category}' is not allowed; allowed: {', '.join(sorted(allowed))}",
        )


async def check_writable_room(ctx: AppContext, principal: Principal, room_id: str) -> None:
    """Run the host's room write guard; its refusals become problem+json."""
    guard = ctx.config.writable_room
    if guard is None:
        return
    try:
        await guard(principal, room_id)
    except ProblemError:
        raise
    except HTTPException as exc:
        raise ProblemError(
            exc.status_code,
            "room-not-writable",
            str(exc.detail),
            headers=exc.headers,
        ) from exc


async def owned_worker_or_new(
    conn: AsyncConnection, principal: Principal, worker_id: str | None, now: datetime
) -> str:
    """The caller's worker named in a registration, or a new one for the caller.

    A worker id that is unknown or belongs to someone else is ``404 worker-not-found``, so
    that registration never reveals other users' workers.
    """
    if worker_id is None:
        return (await workers.create_worker(conn, principal.id, now)).id
    row = await workers.get_worker(conn, worker_id)
    if row is None or row.user_id != principal.id:
        raise worker_not_found(worker_id)
    return row.id


def check_visible_name(room_id: str, full_name: str) -> None:
    """``404 job-not-found`` unless a job of that name would be visible from ``room_id``."""
    parsed = parse_full_name(full_name)
    if parsed is None:
        raise invalid_job_name(full_name)
    if parsed.room_id not in visible_rooms(room_id):
        raise job_not_found(full_name)


async def visible_job(conn: AsyncConnection, room_id: str, full_name: str) -> Row:
    """An active job visible from ``room_id``, else ``404 job-not-found``."""
    check_visible_name(room_id, full_name)
    job = await jobs.get_job(conn, full_name)
    if job is None or job.is_deleted:
        raise job_not_found(full_name)
    return job
