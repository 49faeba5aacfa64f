"""Group commit of the in-loop SQLite writer: blocks of one loop turn share a COMMIT."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text

from joblib_app.models import utcnow, worker_table
from joblib_app.store import workers
from joblib_app.store.database import GROUP_COMMIT_MAX_BLOCKS, Database
from joblib_app.store.sqlite import InLoopSQLite

_W = worker_table.c


class Boom(Exception):
    pass


def count_commits(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the batches committed (their number of blocks), successful or not."""
    in_loop = db._in_loop
    assert in_loop is not None
    committed: list[int] = []
    commit = in_loop._commit

    def counting(batch: Any) -> None:
        committed.append(batch.blocks)
        commit(batch)

    monkeypatch.setattr(in_loop, "_commit", counting)
    return committed


async def user_ids(db: Database) -> list[str]:
    async with db.read() as conn:
        return sorted((await conn.execute(select(_W.user_id))).scalars())


async def insert(db: Database, user_id: str) -> str:
    async with db.write() as conn:
        worker_id: str = (await workers.create_worker(conn, user_id, utcnow())).id
        return worker_id


async def test_concurrent_blocks_share_one_commit(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = count_commits(db, monkeypatch)
    names = [f"user-{i:02d}" for i in range(20)]
    ids = await asyncio.gather(*(insert(db, name) for name in names))
    assert len(set(ids)) == 20
    assert committed == [20]
    assert await user_ids(db) == names


async def test_batches_are_capped(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    committed = count_commits(db, monkeypatch)
    count = GROUP_COMMIT_MAX_BLOCKS * 2 + 5
    names = [f"user-{i:03d}" for i in range(count)]
    await asyncio.gather(*(insert(db, name) for name in names))
    assert committed == [GROUP_COMMIT_MAX_BLOCKS, GROUP_COMMIT_MAX_BLOCKS, 5]
    assert await user_ids(db) == names


async def test_sequential_writes_each_commit(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    committed = count_commits(db, monkeypatch)
    for name in ("a", "b", "c"):
        await insert(db, name)
        # Committed before write() returned: a reader sees it at once.
        assert name in await user_ids(db)
    assert committed == [1, 1, 1]


async def test_failing_block_rolls_back_only_its_own_changes(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = count_commits(db, monkeypatch)

    async def failing() -> None:
        async with db.write() as conn:
            await workers.create_worker(conn, "failing", utcnow())
            raise Boom

    results = await asyncio.gather(
        insert(db, "first"), failing(), insert(db, "last"), return_exceptions=True
    )
    assert isinstance(results[1], Boom)
    assert isinstance(results[0], str) and isinstance(results[2], str)
    assert committed == [3]
    assert await user_ids(db) == ["first", "last"]


async def test_failed_statement_keeps_the_batch(db: Database) -> None:
    """A block whose statement fails (a constraint) leaves the others' work intact."""
    taken = await insert(db, "taken")

    async def duplicate() -> None:
        async with db.write() as conn:
            await conn.execute(
                worker_table.insert(),
                {"id": taken, "user_id": "dup", "last_heartbeat": utcnow(), "created_at": utcnow()},
            )

    results = await asyncio.gather(
        insert(db, "before"), duplicate(), insert(db, "after"), return_exceptions=True
    )
    assert isinstance(results[1], Exception) and "UNIQUE" in str(results[1])
    assert await user_ids(db) == ["after", "before", "taken"]


async def test_suspended_block_does_not_interleave(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = count_commits(db, monkeypatch)
    log: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        async with db.write() as conn:
            log.append("slow:start")
            await workers.create_worker(conn, "slow", utcnow())
            entered.set()
            await release.wait()
            log.append("slow:end")

    async def fast() -> None:
        async with db.write() as conn:
            log.append("fast:start")
            await workers.create_worker(conn, "fast", utcnow())
            log.append("fast:end")

    # Started in the same turn: ``fast`` queues for the lock before the scheduled COMMIT,
    # which finds ``slow`` running and queues behind ``fast``.
    slow_task = asyncio.create_task(slow())
    fast_task = asyncio.create_task(fast())
    await entered.wait()
    # Turns of the loop in which ``fast`` would start if the lock let it.
    for _ in range(5):
        await asyncio.sleep(0)
    assert log == ["slow:start"]
    assert committed == []
    # Not committed: a reader sees nothing of the running batch.
    assert await user_ids(db) == []
    release.set()
    await asyncio.gather(slow_task, fast_task)
    assert log == ["slow:start", "slow:end", "fast:start", "fast:end"]
    # The block that waited for the lock joined the batch of the suspended one.
    assert committed == [2]
    assert await user_ids(db) == ["fast", "slow"]


async def test_nothing_visible_before_commit(db: Database) -> None:
    seen: list[list[str]] = []

    async def read() -> None:
        # Runs in the same loop turn as the write's block, before its scheduled COMMIT.
        seen.append(await user_ids(db))

    await asyncio.gather(insert(db, "writer"), read())
    assert seen == [[]]
    assert await user_ids(db) == ["writer"]


async def test_commit_failure_reaches_every_block(tmp_path: Path) -> None:
    """A COMMIT that fails (a deferred foreign key) fails all blocks of the batch."""
    db = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'joblib.db'}")
    in_loop = db._in_loop
    assert in_loop is not None

    # Before the first connection: the pragma cannot change inside a transaction.
    @event.listens_for(in_loop.writer, "connect")
    def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    await db.create_tables()
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
            await conn.execute(
                text(
                    "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER "
                    "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
                )
            )
        connection_before = in_loop._write_conn

        async def orphan() -> None:
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO child (parent_id) VALUES (42)"))

        results = await asyncio.gather(
            insert(db, "valid"), orphan(), insert(db, "also-valid"), return_exceptions=True
        )
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
        assert "FOREIGN KEY" in str(results[0])
        # Rolled back as a whole, and the connection in an unknown state is not reused.
        assert await user_ids(db) == []
        assert in_loop._write_conn is None
        assert connection_before is not None
        with pytest.raises(sqlite3.ProgrammingError):
            connection_before.raw.execute("SELECT 1")
        await insert(db, "later")
        assert await user_ids(db) == ["later"]
    finally:
        await db.dispose()


async def test_cancelled_waiter_does_not_break_the_batch(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = count_commits(db, monkeypatch)
    first = asyncio.create_task(insert(db, "first"))
    cancelled = asyncio.create_task(insert(db, "cancelled"))
    last = asyncio.create_task(insert(db, "last"))

    async def cancel() -> None:
        # Runs after the three blocks, before their COMMIT: ``cancelled`` is waiting for it.
        assert cancelled.cancel()

    await asyncio.create_task(cancel())
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await asyncio.gather(first, last)
    assert committed == [3]
    # The cancelled caller's block had completed: its change is committed with the rest.
    assert await user_ids(db) == ["cancelled", "first", "last"]


async def test_cancelled_block_rolls_back_its_changes(db: Database) -> None:
    entered = asyncio.Event()

    async def hanging() -> None:
        async with db.write() as conn:
            await workers.create_worker(conn, "hanging", utcnow())
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hanging())
    await entered.wait()
    other = asyncio.create_task(insert(db, "other"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await other
    assert await user_ids(db) == ["other"]


async def test_dispose_commits_an_open_batch(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'joblib.db'}"
    db = Database(url=url)
    await db.create_tables()
    in_loop = db._in_loop
    assert isinstance(in_loop, InLoopSQLite)
    task = asyncio.create_task(insert(db, "pending"))

    async def dispose() -> None:
        # After the block, before its scheduled COMMIT.
        assert in_loop._batch is not None
        await db.dispose()

    await asyncio.create_task(dispose())
    await task
    reopened = Database(url=url)
    try:
        assert await user_ids(reopened) == ["pending"]
    finally:
        await reopened.dispose()


async def test_another_process_writer_waits_for_the_batch(tmp_path: Path) -> None:
    """Two databases on one file stand for two processes: each batch holds SQLite's write
    lock only until its COMMIT, and the other one's BEGIN IMMEDIATE is retried meanwhile."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'joblib.db'}"
    first, second = Database(url=url), Database(url=url)
    await first.create_tables()
    await second.create_tables()
    try:
        names = [f"{db_name}-{i:02d}" for i in range(10) for db_name in ("first", "second")]
        await asyncio.gather(
            *(insert(first if name.startswith("first") else second, name) for name in names)
        )
        assert await user_ids(first) == sorted(names)
        assert await user_ids(second) == sorted(names)
    finally:
        await first.dispose()
        await second.dispose()


async def test_waits_for_a_foreign_write_lock_without_blocking_the_loop(db: Database) -> None:
    path = db.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        task = asyncio.create_task(insert(db, "waiting"))
        for _ in range(5):
            await asyncio.sleep(0)
        # Still retrying, and the loop keeps running this test meanwhile.
        assert not task.done()
        other.commit()
        await task
    finally:
        other.close()
    assert await user_ids(db) == ["waiting"]
