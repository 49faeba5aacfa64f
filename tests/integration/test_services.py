"""The service layer in process, on SQLite and PostgreSQL: no HTTP, no Socket.IO client.

Each test calls the operations the routes, the namespace and the sweeper call, and checks
the rows and the domain errors they answer with.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from joblib_app import JoblibConfig, create_joblib_app
from joblib_app.context import AppContext
from joblib_app.domain.errors import (
    Forbidden,
    InvalidJobName,
    InvalidRoomId,
    InvalidTransition,
    JobNotFound,
    SchemaConflict,
    TaskNotFound,
    WorkerNotFound,
)
from joblib_app.domain.statuses import TaskStatus
from joblib_app.principal import Principal
from joblib_app.services import claim, jobs, task_status, workers
from joblib_app.services.submit import submit_task
from tests.support.services import require_postgres

ALICE = Principal("alice")
BOB = Principal("bob")
ROOT = Principal("root", is_superuser=True)
SCHEMA: dict[str, Any] = {"type": "object"}


async def _nobody(conn: object) -> None:
    return None


@pytest.fixture(params=["sqlite", "postgres"])
def database_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(database_kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database of each kind (a PostgreSQL one is dropped afterwards)."""
    if database_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'services.db'}"
        return
    admin_url = require_postgres()
    name = f"joblib_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
async def ctx(database_url: str) -> AsyncIterator[AppContext]:
    """A started app's context."""
    url = database_url
    joblib = create_joblib_app(JoblibConfig(authenticate=_nobody, database_url=url))
    async with joblib.lifespan(None):
        yield joblib.context


async def _job(
    ctx: AppContext, owner: Principal = ALICE, name: str = "Add"
) -> jobs.JobRegistration:
    return await jobs.register_job(
        ctx,
        owner,
        "room",
        category="modifiers",
        name=name,
        schema=SCHEMA,
        worker_id=None,
        max_attempts=None,
        timeout_seconds=None,
    )


async def test_task_cycle(ctx: AppContext) -> None:
    registered = await _job(ctx)
    assert registered.created
    full_name = registered.job.full_name
    row, positions = await submit_task(ctx, BOB, "room", full_name, {"a": 1})
    assert row.status == TaskStatus.PENDING
    assert positions[row.seq] == 1
    claimed = await claim.claim_once(ctx, registered.worker_id, owner=ALICE)
    assert claimed is not None and claimed.id == row.id
    assert claimed.status == TaskStatus.CLAIMED
    assert await claim.claim_once(ctx, registered.worker_id, owner=ALICE) is None
    running, _ = await task_status.set_task_status(ctx, row.id, TaskStatus.RUNNING, actor=ALICE)
    done, _ = await task_status.set_task_status(
        ctx, row.id, TaskStatus.COMPLETED, actor=ALICE, reported={"result": 3}
    )
    assert done.status == TaskStatus.COMPLETED
    assert done.result == 3
    assert done.version == running.version + 1
    # The same status again changes nothing.
    again, _ = await task_status.set_task_status(ctx, row.id, TaskStatus.COMPLETED, actor=ALICE)
    assert again.version == done.version
    with pytest.raises(InvalidTransition):
        await task_status.set_task_status(ctx, row.id, TaskStatus.RUNNING, actor=ALICE)


async def test_who_may_move_a_task(ctx: AppContext) -> None:
    registered = await _job(ctx)
    row, _ = await submit_task(ctx, BOB, "room", registered.job.full_name, {})
    # Pending: no claimer to be forbidden by, the transition's answer.
    with pytest.raises(InvalidTransition):
        await task_status.set_task_status(ctx, row.id, TaskStatus.RUNNING, actor=BOB)
    await claim.claim_once(ctx, registered.worker_id, owner=ALICE)
    with pytest.raises(Forbidden):
        await task_status.set_task_status(ctx, row.id, TaskStatus.RUNNING, actor=BOB)
    # The submitter may cancel; a superuser may do anything.
    cancelled, _ = await task_status.set_task_status(ctx, row.id, TaskStatus.CANCELLED, actor=BOB)
    assert cancelled.status == TaskStatus.CANCELLED
    with pytest.raises(TaskNotFound):
        await task_status.set_task_status(
            ctx, "00000000-0000-0000-0000-000000000000", TaskStatus.CANCELLED, actor=ROOT
        )


async def test_the_one_job_upsert(ctx: AppContext) -> None:
    first = await _job(ctx)
    second = await _job(ctx)
    assert not second.created
    assert second.job.id == first.job.id
    assert set(second.workers) == {first.worker_id, second.worker_id}
    with pytest.raises(SchemaConflict):
        await jobs.register_job(
            ctx,
            ALICE,
            "room",
            category="modifiers",
            name="Add",
            schema={"type": "string"},
            worker_id=None,
            max_attempts=None,
            timeout_seconds=None,
        )


async def test_worker_ownership(ctx: AppContext) -> None:
    worker = await workers.create_worker(ctx, ALICE)
    with pytest.raises(Forbidden, match="Only the worker's owner may send its heartbeat"):
        await workers.heartbeat(ctx, BOB, worker.id)
    with pytest.raises(Forbidden, match="Only the worker's owner may claim tasks with it"):
        await claim.claim_once(ctx, worker.id, owner=BOB)
    with pytest.raises(Forbidden, match="Only the worker's owner or a superuser may delete it"):
        await workers.delete_worker(ctx, BOB, worker.id)
    # Registration never reveals another user's worker.
    with pytest.raises(WorkerNotFound):
        await jobs.register_job(
            ctx,
            BOB,
            "room",
            category="modifiers",
            name="Mul",
            schema=SCHEMA,
            worker_id=worker.id,
            max_attempts=None,
            timeout_seconds=None,
        )
    beat = await workers.heartbeat(ctx, ALICE, worker.id)
    assert beat.last_heartbeat >= worker.last_heartbeat
    await workers.delete_worker(ctx, ROOT, worker.id)
    with pytest.raises(WorkerNotFound):
        await workers.heartbeat(ctx, ALICE, worker.id)


async def test_cleanup_requeues_claimed_tasks(ctx: AppContext) -> None:
    registered = await _job(ctx)
    other = await _job(ctx, owner=ALICE)
    row, _ = await submit_task(ctx, BOB, "room", registered.job.full_name, {})
    claimed = await claim.claim_once(ctx, registered.worker_id, owner=ALICE)
    assert claimed is not None
    removed = await workers.cleanup_workers(ctx, [registered.worker_id], reason="test")
    assert removed == [registered.worker_id]
    again, _ = await task_status.read_task(ctx, row.id)
    assert again.status == TaskStatus.PENDING
    assert again.worker_id is None
    # The job still has a worker: it stays, and that worker claims the task.
    reclaimed = await claim.claim_once(ctx, other.worker_id, owner=ALICE)
    assert reclaimed is not None and reclaimed.id == row.id


async def test_submit_refusals(ctx: AppContext) -> None:
    registered = await _job(ctx)
    with pytest.raises(InvalidRoomId):
        await submit_task(ctx, BOB, "bad/room", registered.job.full_name, {})
    with pytest.raises(InvalidJobName):
        await submit_task(ctx, BOB, "room", "no-colons", {})
    # A job of another room is not visible.
    with pytest.raises(JobNotFound):
        await submit_task(ctx, BOB, "elsewhere", registered.job.full_name, {})
