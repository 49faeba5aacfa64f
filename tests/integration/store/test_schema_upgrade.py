"""A database made by an earlier release is upgraded in place at start-up, its tasks kept.

The earlier schema is the current one without the columns and indexes issues 13-15 added;
it is created and filled with a pending task, then the app starts on it and that task is
claimed, run and completed with a result, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Column, Index, MetaData, Table
from sqlalchemy.ext.asyncio import create_async_engine

from joblib_app import SchemaOutdated
from joblib_app.store.database import TABLES, Database
from tests.support.databases import DATABASES, fresh_postgres, sqlite_url
from tests.support.in_process import serve_in_process
from tests.support.names import ALICE, auth, new_room
from tests.support.server import server_env

# What the tables lacked before issues 13 (leases, attempts), 14 (results, progress, event
# order) and 15 (retention, the operator's view).
ADDED_COLUMNS = {
    "joblib_task": {"version", "result", "progress", "progress_message", "claimed_at", "attempt"},
    "joblib_job": {"max_attempts", "timeout_seconds"},
}
ADDED_INDEXES = {"ix_joblib_task_finished", "ix_joblib_task_active_internal"}


def earlier_schema(
    missing_columns: dict[str, set[str]], missing_indexes: set[str]
) -> tuple[MetaData, dict[str, Table]]:
    """The package's tables without ``missing_columns`` and ``missing_indexes``."""
    metadata = MetaData()
    tables: dict[str, Table] = {}
    for table in TABLES:
        missing = missing_columns.get(table.name, set())
        copy = Table(
            table.name,
            metadata,
            *(
                Column(
                    column.name,
                    column.type,
                    primary_key=column.primary_key,
                    nullable=column.nullable,
                    unique=column.unique,
                    autoincrement=column.autoincrement,
                )
                for column in table.columns
                if column.name not in missing
            ),
        )
        for index in table.indexes:
            names = [column.name for column in index.columns]
            if index.name in missing_indexes or missing.intersection(names):
                continue
            Index(index.name, *(copy.c[name] for name in names), **index.dialect_kwargs)
        tables[table.name] = copy
    return metadata, tables


@contextlib.asynccontextmanager
async def empty_database(kind: str, workdir: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield sqlite_url(workdir)
        return
    async with fresh_postgres() as url:
        yield url


async def create_earlier_release_database(url: str, room: str) -> str:
    """The earlier schema with one job and one pending task in ``room``; the task's id."""
    metadata, tables = earlier_schema(ADDED_COLUMNS, ADDED_INDEXES)
    now = datetime.now(UTC)
    job_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    full_name = f"{room}:modifiers:legacy"
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(
                tables["joblib_job"]
                .insert()
                .values(
                    id=job_id,
                    room_id=room,
                    category="modifiers",
                    name="legacy",
                    full_name=full_name,
                    schema={},
                    is_deleted=False,
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                tables["joblib_task"]
                .insert()
                .values(
                    id=task_id,
                    job_id=job_id,
                    job_name=full_name,
                    room_id=room,
                    status="pending",
                    created_by=ALICE,
                    payload={"n": 1},
                    created_at=now,
                )
            )
    finally:
        await engine.dispose()
    return task_id


@pytest.mark.parametrize("kind", DATABASES)
async def test_earlier_release_database_is_upgraded_and_its_task_runs(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    room = new_room()
    async with empty_database(kind, tmp_path) as url:
        task_id = await create_earlier_release_database(url, room)
        caplog.set_level(logging.INFO, logger="joblib_app.store.schema")

        async with serve_in_process(server_env(url)) as app:
            upgrades = [r.getMessage() for r in caplog.records if "Upgraded" in r.getMessage()]
            assert len(upgrades) == 1, upgrades
            for table, columns in ADDED_COLUMNS.items():
                for column in columns:
                    assert f"{table}.{column}" in upgrades[0]
            for index in ADDED_INDEXES:
                assert f"index {index}" in upgrades[0]

            http, alice = app.client, auth(ALICE)
            worker = (await http.post(f"{app.base}/workers", headers=alice)).json()["id"]
            body = {"category": "modifiers", "name": "legacy", "schema": {}, "worker_id": worker}
            registered = await http.put(f"{app.base}/rooms/{room}/jobs", json=body, headers=alice)
            assert registered.status_code == 200, registered.text  # the job existed

            claimed = await http.post(
                f"{app.base}/tasks/claim", json={"worker_id": worker}, headers=alice
            )
            task = claimed.json()["task"]
            assert task["id"] == task_id
            assert (task["payload"], task["version"], task["attempt"]) == ({"n": 1}, 2, 1)
            for update in ({"status": "running"}, {"status": "completed", "result": [1, 2]}):
                answer = await http.patch(f"{app.base}/tasks/{task_id}", json=update, headers=alice)
                assert answer.status_code == 200, answer.text
            final = (await http.get(f"{app.base}/tasks/{task_id}", headers=alice)).json()
            assert (final["status"], final["result"]) == ("completed", [1, 2])

        # Once upgraded, a start-up adds nothing.
        caplog.clear()
        database = Database(url=url)
        try:
            await database.create_tables()
        finally:
            await database.dispose()
        assert not [r for r in caplog.records if "Upgraded" in r.getMessage()]


async def test_missing_column_that_cannot_be_added_stops_the_start(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    metadata, _ = earlier_schema({"joblib_task": {"job_name"}}, set())
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
    finally:
        await engine.dispose()

    database = Database(url=url)
    try:
        with pytest.raises(SchemaOutdated, match=r"joblib_task\.job_name is missing"):
            await database.create_tables()
    finally:
        await database.dispose()
