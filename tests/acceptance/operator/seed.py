"""Old task rows written straight into the database (retention test and bench)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from joblib_app.domain.statuses import TERMINAL_STATUSES
from joblib_app.models import UTCDateTime, task_table
from joblib_app.store.database import Database

_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
CHUNK = 5000


def task_row(
    status: str, *, created: datetime, finished: datetime | None, job: str
) -> dict[str, Any]:
    started = created if status in ("running", *_TERMINAL) else None
    return {
        "id": str(uuid.uuid4()),
        "job_id": job,
        "job_name": f"seed:modifiers:{job[:8]}",
        "room_id": "seed",
        "status": status,
        "created_by": "seeder",
        "worker_id": None,
        "error": None,
        "payload": {},
        "created_at": created,
        "started_at": started,
        "completed_at": finished,
    }


async def seed_tasks(url: str, rows: list[dict[str, Any]]) -> None:
    """Create the tables (as the app does) and insert ``rows`` in chunks."""
    db = Database(url=url)
    await db.create_tables()
    await db.dispose()
    engine = create_async_engine(url)
    try:
        for start in range(0, len(rows), CHUNK):
            async with engine.begin() as conn:
                await conn.execute(task_table.insert(), rows[start : start + CHUNK])
    finally:
        await engine.dispose()


_COLUMNS = (
    "id, job_id, job_name, room_id, status, created_by, payload, created_at, started_at, "
    "completed_at"
)
_VALUES = (
    "'old-' || i, :job, 'seed:modifiers:old', 'seed', "
    "CASE i % 3 WHEN 0 THEN 'cancelled' WHEN 1 THEN 'completed' ELSE 'failed' END, "
    "'seeder', '{}', :at, :at, :at"
)
_SEED = {
    "sqlite": f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
    f"INSERT INTO joblib_task ({_COLUMNS}) SELECT {_VALUES} FROM n",
    "postgresql": f"INSERT INTO joblib_task ({_COLUMNS}) "
    f"SELECT {_VALUES} FROM generate_series(1, :count) AS i",
}


async def seed_finished(url: str, count: int, finished: datetime) -> None:
    """``count`` terminal tasks created, started and finished at ``finished``, in one
    statement (rows built in Python would take the test most of its time)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            stmt = text(_SEED[conn.dialect.name]).bindparams(bindparam("at", type_=UTCDateTime))
            await conn.execute(stmt, {"count": count, "at": finished, "job": str(uuid.uuid4())})
    finally:
        await engine.dispose()


def finished_rows(count: int, *, created: datetime, finished: datetime) -> list[dict[str, Any]]:
    """``count`` terminal tasks, their statuses in turn."""
    job = str(uuid.uuid4())
    return [
        task_row(_TERMINAL[i % len(_TERMINAL)], created=created, finished=finished, job=job)
        for i in range(count)
    ]


async def task_ids(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(select(task_table.c.id))).scalars())
    finally:
        await engine.dispose()


async def task_count(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(task_table))).scalar_one()
    finally:
        await engine.dispose()
