"""The connection contract: every driver answers the same store calls the same way.

Four drivers run one scripted sequence of store calls (jobs, workers, submit, claim,
transitions, progress, lists, recovery): SQLite in the loop, SQLite through SQLAlchemy
(in memory), PostgreSQL on asyncpg, PostgreSQL through a SQLAlchemy engine. Their answers,
with generated ids and times replaced by stable names, must be equal. Then the asyncpg
driver's own promises: prepared statements survive a terminated connection, and a
connection cancelled mid-statement is never handed out again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from joblib_app.domain.statuses import TaskStatus
from joblib_app.store import jobs, providers, tasks, workers
from joblib_app.store.connection import Connection
from joblib_app.store.connection_loss import is_connection_lost
from joblib_app.store.database import Database
from joblib_app.store.postgres import POOL_SIZE, PostgresConnection, PostgresDriver
from tests.support.databases import postgres_database
from tests.support.services import POSTGRES_ADMIN_URL

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


class Names:
    """Generated values (ids) replaced by the order in which they first appear."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) == 36 and value.count("-") == 4:
            return self.seen.setdefault(value, f"id{len(self.seen)}")
        if isinstance(value, tuple | list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        return value


def _row(names: Names, row: Any) -> Any:
    if row is None:
        return None
    return {key: names(value) for key, value in row._mapping.items()}


async def _script(db: Database) -> list[Any]:
    """The store calls, in order, and what each answered."""
    names = Names()
    out: list[Any] = []
    async with db.write() as conn:
        alice = await workers.create_worker(conn, "alice", T0)
        bob = await workers.create_worker(conn, "bob", T0)
        job = await jobs.insert_job(
            conn,
            room_id="room",
            category="modifiers",
            name="run",
            full_name="room:modifiers:run",
            schema={"type": "object", "n": [1, 2.5, None]},
            now=T0,
        )
        assert job is not None
        out.append(_row(names, job))
        out.append(
            await jobs.insert_job(
                conn,
                room_id="room",
                category="modifiers",
                name="run",
                full_name="room:modifiers:run",
                schema={},
                now=T0,
            )
        )
        out.append(await jobs.link_worker(conn, alice.id, job.id))
        out.append(await jobs.link_worker(conn, alice.id, job.id))
        out.append(await jobs.link_worker(conn, bob.id, job.id))
        await tasks.set_retry_policy(conn, job.id, 2, 30.0)
    async with db.autocommit() as conn:
        submitted = []
        for i in range(3):
            row = await tasks.submit_to_active_job(
                conn,
                job_name="room:modifiers:run",
                room_id="room",
                payload={"i": i, "nested": {"ok": True}},
                created_by="carol",
                now=T0 + timedelta(seconds=i),
            )
            assert row is not None
            submitted.append(row)
            out.append([_row(names, row), await tasks.queue_positions(conn, [row])])
        out.append(
            await tasks.submit_to_active_job(
                conn, job_name="room:x:none", room_id="room", payload={}, created_by="c", now=T0
            )
        )
        out.append(await tasks.queue_positions(conn, submitted))
        out.append(_row(names, await tasks.claim_next(conn, alice.id, owner_id="bob")))
        claimed = await tasks.claim_next(conn, alice.id, owner_id="alice")
        out.append(_row(names, claimed))
        assert claimed is not None
        running = await tasks.transition_if_allowed(
            conn,
            claimed.id,
            to_status=TaskStatus.RUNNING,
            actor=tasks.WORKER_OWNER,
            actor_id="alice",
            error=None,
            now=T0,
        )
        out.append(_row(names, running))
        out.append(
            _row(
                names,
                await tasks.report_progress(
                    conn,
                    claimed.id,
                    actor=tasks.WORKER_OWNER,
                    actor_id="alice",
                    reported={"progress": 0.5, "progress_message": "half"},
                ),
            )
        )
        out.append(
            _row(
                names,
                await tasks.transition(
                    conn,
                    claimed.id,
                    from_status="running",
                    to_status=TaskStatus.COMPLETED,
                    error=None,
                    now=T0 + timedelta(minutes=1),
                    reported={"result": {"answer": [42]}},
                ),
            )
        )
        out.append(_row(names, await tasks.get_task_with_owner(conn, claimed.id)))
        out.append(_row(names, await workers.touch_worker(conn, bob.id, T0 + timedelta(hours=1))))
    async with db.write() as conn:
        other = await tasks.claim_next(conn, bob.id)
        assert other is not None
        active = tasks.active_tasks_of_workers([bob.id])
        out.append([_row(names, r) for r in await tasks.requeue_lost_tasks(conn, active)])
        out.append([_row(names, r) for r in await tasks.fail_active_tasks(conn, active, "x", T0)])
        stale = await workers.lock_stale_workers(conn, [alice.id, bob.id], T0 + timedelta(1))
        out.append(sorted(names(stale)))
        await jobs.lock_jobs(conn, [job.id])
        await db.serialize_across_processes(conn, "joblib_app.test")
        provider = await providers.insert_provider(
            conn,
            now=T0,
            room_id="room",
            category="data",
            name="p",
            full_name="room:data:p",
            schema={},
            content_type="application/json",
            user_id="alice",
            worker_id=alice.id,
        )
        assert provider is not None
        out.append(_row(names, provider))
    async with db.read() as conn:
        page, total = await tasks.list_tasks(conn, room_id="room", limit=2, offset=0)
        out.append([[_row(names, r) for r in page], total])
        serving = await jobs.workers_of_jobs(conn, [job.id])
        # Ordered by worker id, which is random: compare as sets.
        out.append({names(k): sorted(names(v)) for k, v in serving.items()})
        out.append(await jobs.job_names_of_worker(conn, alice.id))
        listed, count = await workers.list_workers(conn, limit=10, offset=0)
        out.append([sorted(names(r.id) for r in listed), count])
        out.append(names(await workers.stale_worker_ids(conn, T0 + timedelta(minutes=30))))
    async with db.write() as conn:
        out.append(_row(names, await providers.delete_provider(conn, provider.id)))
        out.append(names(await workers.delete_workers(conn, [alice.id])))
        out.append([_row(names, r) for r in await jobs.soft_delete_orphans(conn, [job.id])])
    return out


@pytest.fixture
async def sqlite_in_loop(tmp_path: Any) -> AsyncIterator[Database]:
    db = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'joblib.db'}")
    assert db._in_loop is not None
    await db.create_tables()
    yield db
    await db.dispose()


async def _fresh(db: Database) -> list[Any]:
    await db.create_tables()
    try:
        return await _script(db)
    finally:
        await db.dispose()


async def _postgres_answers(url: str, *, through_engine: bool) -> list[Any]:
    """The script on a clean schema of ``url``'s database."""
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for table in ("joblib_task", "joblib_worker_job", "joblib_job", "joblib_worker"):
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await conn.execute(text("DROP TABLE IF EXISTS joblib_provider"))
    try:
        db = Database(engine=engine) if through_engine else Database(url=url)
        assert isinstance(db._driver, PostgresDriver) is not through_engine
        return await _fresh(db)
    finally:
        await engine.dispose()


async def test_every_driver_answers_alike(sqlite_in_loop: Database, postgres_url: str) -> None:
    reference = await _script(sqlite_in_loop)
    memory = Database(url="sqlite+aiosqlite:///:memory:")
    assert memory._in_loop is None
    assert await _fresh(memory) == reference
    assert await _postgres_answers(postgres_url, through_engine=False) == reference
    assert await _postgres_answers(postgres_url, through_engine=True) == reference


def _pid(conn: Connection) -> int:
    """The server process of an asyncpg driver's connection."""
    assert isinstance(conn, PostgresConnection)
    pid: int = conn.raw.get_server_pid()
    return pid


async def _wait_until_running(url: str, query: str) -> None:
    """Until the server reports ``query`` running on ``url``'s database."""
    admin = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    seen = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND state = 'active' "
        "AND query = :query"
    )
    try:
        async with admin.connect() as conn:
            params = {"db": url.rsplit("/", 1)[1], "query": query}
            # The server's view of its sessions has nothing to wait on: poll it.
            for _ in range(1000):
                if (await conn.execute(seen, params)).scalar_one():
                    return
                await asyncio.sleep(0.01)
            raise TimeoutError(f"{query} never ran")
    finally:
        await admin.dispose()


async def _terminate_backends(url: str) -> int:
    database = url.rsplit("/", 1)[1]
    admin = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            )
            return int(result.scalar_one())
    finally:
        await admin.dispose()


async def test_prepared_statements_survive_a_terminated_connection(postgres_url: str) -> None:
    db = Database(url=postgres_url)
    await db.create_tables()
    try:
        async with db.write() as conn:
            worker = await workers.create_worker(conn, "alice", T0)
        async with db.read() as conn:
            assert (await workers.get_worker(conn, worker.id)) is not None
            before = _pid(conn)
        assert await _terminate_backends(postgres_url) >= 1
        # The idle connection may not have noticed yet: at most one statement fails, as
        # a lost connection (the routes answer 503 or read again), and it is not reused.
        for attempt in range(2):
            try:
                async with db.read() as conn:
                    found = await workers.get_worker(conn, worker.id)
                    pid = _pid(conn)
                break
            except Exception as exc:
                assert attempt == 0 and is_connection_lost(exc), exc
        assert found is not None and found.user_id == "alice"
        assert pid != before
        async with db.autocommit() as conn:
            touched = await workers.touch_worker(conn, worker.id, T0 + timedelta(1))
        assert touched is not None and touched.last_heartbeat == T0 + timedelta(1)
    finally:
        await db.dispose()


async def test_a_cancelled_statement_never_reaches_the_next_caller(postgres_url: str) -> None:
    db = Database(url=postgres_url)
    await db.create_tables()
    slow = text("SELECT pg_sleep(5)")
    try:
        async with db.read() as conn:
            first = _pid(conn)

        async def sleep() -> None:
            async with db.read() as conn:
                await conn.execute(slow)

        task = asyncio.create_task(sleep())
        # The cancellation must hit mid-statement.
        await _wait_until_running(postgres_url, "SELECT pg_sleep(5)")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            # ``raw`` is typed as the contract's connection; on this driver it is asyncpg's.
            assert conn.raw.get_server_pid() != first  # type: ignore[attr-defined]
    finally:
        await db.dispose()


async def test_a_cancelled_write_commits_nothing(postgres_url: str) -> None:
    db = Database(url=postgres_url)
    await db.create_tables()
    slow = text("SELECT pg_sleep(5)")
    try:

        async def write_then_sleep() -> None:
            async with db.write() as conn:
                await workers.create_worker(conn, "cancelled-writer", T0)
                await conn.execute(slow)

        task = asyncio.create_task(write_then_sleep())
        await _wait_until_running(postgres_url, "SELECT pg_sleep(5)")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.write() as conn:
            await workers.create_worker(conn, "next-writer", T0)
        async with db.read() as conn:
            found = (
                await conn.execute(
                    text("SELECT user_id FROM joblib_worker WHERE user_id LIKE '%-writer'")
                )
            ).scalars()
            assert sorted(found) == ["next-writer"]
    finally:
        await db.dispose()


async def test_a_waiter_cancelled_after_its_turn_came_stays_cancelled(postgres_url: str) -> None:
    """The pool is full; a freed slot is handed to the first waiter, which is cancelled
    before it runs (a client hanging up, a timeout). It must stay cancelled, never run its
    statements, and the slot must pass on to the next waiter."""
    db = Database(url=postgres_url)
    driver = db._driver
    assert isinstance(driver, PostgresDriver)
    release = asyncio.Event()
    all_held = asyncio.Event()
    holding = 0

    async def hold() -> None:
        nonlocal holding
        async with db.read():
            holding += 1
            if holding == POOL_SIZE:
                all_held.set()
            await release.wait()

    ran: list[str] = []

    async def read(name: str) -> None:
        async with db.read() as conn:
            await conn.execute(text("SELECT 1"))
            ran.append(name)

    holders = [asyncio.create_task(hold()) for _ in range(POOL_SIZE)]
    try:
        await asyncio.wait_for(all_held.wait(), 30)
        first = asyncio.create_task(read("first"))
        second = asyncio.create_task(read("second"))
        await _loop_until(lambda: len(driver._waiters) == 2)
        # A cancelled holder's connection is terminated: its slot goes to the first waiter.
        holders[0].cancel()
        # Stepped one pass at a time: the first waiter's turn has come, it has not run yet.
        await _loop_until(lambda: len(driver._waiters) == 1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 10)
        assert ran == ["second"]
    finally:
        release.set()
        await asyncio.gather(*holders, return_exceptions=True)
        await db.dispose()


async def _loop_until(condition: Callable[[], bool], passes: int = 10_000) -> None:
    """Let the event loop run, one pass at a time, until ``condition`` holds."""
    for _ in range(passes):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition did not come true")
