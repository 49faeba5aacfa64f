"""Jobs: registration (the one upsert), listing, reading; the room's workers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from joblib_app.context import AppContext
from joblib_app.domain.errors import SchemaConflict
from joblib_app.domain.names import make_full_name, validate_room_id, visible_rooms
from joblib_app.domain.statuses import TaskStatus
from joblib_app.limits import check_json_body
from joblib_app.models import utcnow
from joblib_app.principal import Principal
from joblib_app.realtime.events import JobsInvalidate, Outbox, room_channel
from joblib_app.services.access import (
    check_category,
    check_may_serve,
    check_readable_room,
    check_reserved_room,
    check_writable_room,
    owned_worker_or_new,
    visible_job,
)
from joblib_app.services.events import notify_worker_jobs_changed
from joblib_app.services.rows import Record
from joblib_app.store import jobs, tasks, workers
from joblib_app.store.connection import Connection


@dataclass(frozen=True, slots=True)
class UpsertedJob:
    """A job row after :func:`upsert_job`, and what the upsert did to it."""

    job: Record
    created: bool
    # Brought back from soft deletion, or given the new schema.
    reactivated: bool


async def upsert_job(
    conn: Connection,
    *,
    room_id: str,
    category: str,
    name: str,
    full_name: str,
    schema: dict[str, Any],
    now: datetime,
    replace_schema: bool,
) -> UpsertedJob:
    """Insert the job, or take the existing one of that name.

    A soft-deleted job is reactivated with ``schema``. An active one with another schema
    is replaced when ``replace_schema`` (``@internal`` jobs: the code is the truth), else
    ``409 schema-conflict``. The insert ignores a conflicting name, so concurrent
    registrations (in any process) end with one row.
    """
    created = await jobs.insert_job(
        conn,
        room_id=room_id,
        category=category,
        name=name,
        full_name=full_name,
        schema=schema,
        now=now,
    )
    if created is not None:
        return UpsertedJob(created, created=True, reactivated=False)
    existing = await jobs.get_job(conn, full_name)
    assert existing is not None  # the insert conflicted on this very name
    if existing.is_deleted or (replace_schema and existing.schema != schema):
        job = await jobs.reactivate_job(conn, existing.id, schema, now)
        return UpsertedJob(job, created=False, reactivated=True)
    if existing.schema != schema:
        raise SchemaConflict(full_name)
    return UpsertedJob(existing, created=False, reactivated=False)


@dataclass(frozen=True, slots=True)
class JobRegistration:
    """The outcome of :func:`register_job`."""

    job: Record
    workers: list[str]
    worker_id: str
    # A new job, or a deleted one brought back (``201``); else it existed (``200``).
    created: bool


async def register_job(
    ctx: AppContext,
    principal: Principal,
    room_id: str,
    *,
    category: str,
    name: str,
    schema: dict[str, Any],
    worker_id: str | None,
    max_attempts: int | None,
    timeout_seconds: float | None,
) -> JobRegistration:
    """Register a job (or link a worker to it): the caller's worker, or a new one."""
    validate_room_id(room_id)
    check_reserved_room(principal, room_id, "jobs")
    check_json_body(schema, ctx.settings.max_json_depth, "schema")
    check_category(category, ctx.settings.allowed_categories)
    await check_writable_room(ctx, principal, room_id)
    full_name = make_full_name(room_id, category, name)
    await check_may_serve(ctx, principal, room_id, full_name)
    now = utcnow()
    outbox = Outbox()
    async with ctx.db.write() as conn:
        worker_id = await owned_worker_or_new(conn, principal, worker_id, now)
        upserted = await upsert_job(
            conn,
            room_id=room_id,
            category=category,
            name=name,
            full_name=full_name,
            schema=schema,
            now=now,
            replace_schema=False,
        )
        job = upserted.job
        await tasks.set_retry_policy(conn, job.id, max_attempts, timeout_seconds)
        linked = await jobs.link_worker(conn, worker_id, job.id)
        linked_workers = (await jobs.workers_of_jobs(conn, [job.id]))[job.id]
    if linked:
        notify_worker_jobs_changed(outbox, worker_id)
    if upserted.created or linked or job.schema != schema:
        outbox.emit(JobsInvalidate(), room_channel(room_id))
    await ctx.dispatch(outbox)
    return JobRegistration(
        job=job,
        workers=list(linked_workers),
        worker_id=worker_id,
        created=upserted.created or upserted.reactivated,
    )


async def list_jobs(
    ctx: AppContext, principal: Principal, room_id: str, *, limit: int, offset: int
) -> tuple[list[tuple[Record, list[str]]], int]:
    """The jobs visible from ``room_id`` with their workers' ids, and their total."""
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        rows, total = await jobs.list_jobs(conn, visible_rooms(room_id), limit=limit, offset=offset)
        linked = await jobs.workers_of_jobs(conn, [r.id for r in rows])
    return [(r, list(linked[r.id])) for r in rows], total


async def get_job(
    ctx: AppContext, principal: Principal, room_id: str, full_name: str
) -> tuple[Record, list[str]]:
    """An active job visible from ``room_id``, with its workers' ids."""
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        job = await visible_job(conn, room_id, full_name)
        linked = await jobs.workers_of_jobs(conn, [job.id])
    return job, list(linked[job.id])


async def list_tasks(
    ctx: AppContext,
    principal: Principal,
    room_id: str,
    *,
    job_full_name: str | None = None,
    status: TaskStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Record], dict[int, int], int]:
    """A room's tasks (of one job, if named), their queue positions, and their total."""
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        job_id = None
        if job_full_name is not None:
            job_id = (await visible_job(conn, room_id, job_full_name)).id
        rows, total = await tasks.list_tasks(
            conn, room_id=room_id, job_id=job_id, status=status, limit=limit, offset=offset
        )
        positions = await tasks.queue_positions(conn, rows)
    return list(rows), positions, total


async def list_room_workers(
    ctx: AppContext, principal: Principal, room_id: str, *, limit: int, offset: int
) -> tuple[list[Record], int]:
    """The workers serving jobs visible from ``room_id``, and their total."""
    validate_room_id(room_id)
    await check_readable_room(ctx, principal, room_id)
    async with ctx.db.read() as conn:
        rows, total = await workers.list_workers_in_rooms(
            conn, visible_rooms(room_id), limit=limit, offset=offset
        )
    return list(rows), total
