"""The compiled path of the in-loop SQLite connections answers exactly like SQLAlchemy."""

from __future__ import annotations

import gc
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Table, bindparam, exc, func, select, text, update

from joblib_app.domain.statuses import TaskStatus
from joblib_app.models import (
    job_table,
    link_table,
    provider_table,
    task_table,
    utcnow,
    worker_table,
)
from joblib_app.store import jobs, sqlite, task_submit, tasks, workers
from joblib_app.store.connection import Row
from joblib_app.store.database import Database
from joblib_app.store.sqlite import SQLiteConnection

AWARE = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
OTHER_ZONE = datetime(2026, 3, 4, 7, 6, 7, 1, tzinfo=timezone(timedelta(hours=2)))
NAIVE = datetime(2026, 1, 2, 3, 4, 5, 600000)
SCHEMA = {"type": "object", "props": {"ä": [1, 2.5, None, True, "x"]}, "nested": {"e": {}}}


def plan_of(conn: Any, statement: Any, parameters: Any = None) -> Any:
    assert isinstance(conn, SQLiteConnection)
    assert conn._statements is not None
    return conn._statements.plan(statement, parameters)


def present(row: Row | None) -> Row:
    """A row the store must have returned."""
    assert row is not None
    return row


def same_values(fast: Any, slow: Any) -> None:
    """Equal, of the same types, datetimes in the same zone."""
    assert tuple(fast) == tuple(slow)
    assert fast._fields == slow._fields
    for a, b in zip(fast, slow, strict=True):
        assert type(a) is type(b), (a, b)
        if isinstance(a, datetime):
            assert a.tzinfo == b.tzinfo
            assert a.utcoffset() == b.utcoffset()


def stored(conn: Any, table: Table, where: str, value: Any) -> tuple[Any, ...]:
    """The row as SQLite stores it, with no type processing."""
    row: tuple[Any, ...] = conn.raw.execute(
        f"SELECT * FROM {table.name} WHERE {where} = ?", (value,)
    ).fetchone()
    return row


ROWS: dict[str, dict[str, Any]] = {
    "joblib_worker": {"user_id": "alice", "last_heartbeat": OTHER_ZONE, "created_at": NAIVE},
    "joblib_job": {
        "room_id": "room",
        "category": "cat",
        "name": "n",
        "schema": SCHEMA,
        "is_deleted": True,
        "created_at": AWARE,
        "updated_at": OTHER_ZONE,
    },
    "joblib_worker_job": {},
    "joblib_task": {
        "job_id": "j",
        "job_name": "room:cat:n",
        "room_id": "room",
        "status": "running",
        "created_by": "bob",
        "worker_id": None,
        "error": "it failed\nbadly ✗",
        "payload": {"a": [1, {"b": None}], "s": "ü"},
        "created_at": AWARE,
        "started_at": OTHER_ZONE,
        "completed_at": None,
    },
    "joblib_provider": {
        "room_id": "room",
        "category": "cat",
        "name": "p",
        "schema": SCHEMA,
        "content_type": "application/json",
        "user_id": "alice",
        "worker_id": "w",
        "created_at": NAIVE,
    },
}


def row_values(table: Table) -> dict[str, Any]:
    values = dict(ROWS[table.name])
    unique = str(uuid.uuid4())
    if table is link_table:
        values.update(worker_id=unique, job_id=unique)
    else:
        values["id"] = unique
    if "full_name" in table.c:
        values["full_name"] = f"room:cat:{unique}"
    return values


def varying(table: Table) -> set[int]:
    """Positions of the columns that differ between two inserted rows (keys)."""
    names = {"seq", "id", "full_name"}
    if table is link_table:
        names |= {"worker_id", "job_id"}
    return {i for i, column in enumerate(table.c) if column.name in names}


@pytest.mark.parametrize(
    "table", [worker_table, job_table, link_table, task_table, provider_table], ids=str
)
async def test_insert_and_select_match_sqlalchemy(db: Database, table: Table) -> None:
    insert = table.insert().returning(*table.c)
    key = table.c.worker_id if table is link_table else table.c.id
    get = select(*table.c).where(key == bindparam("key"))
    async with db.write() as conn:
        slow_values = row_values(table)
        assert plan_of(conn, insert, slow_values) is None
        slow = (await conn.execute(insert, slow_values)).one()
        fast_values = row_values(table)
        assert plan_of(conn, insert, fast_values) is not None
        fast = (await conn.execute(insert, fast_values)).one()

        skip = varying(table)
        assert fast._fields == slow._fields
        for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
            if i not in skip:
                assert a == b and type(a) is type(b)
        # Bound the same way: SQLite holds the same text for both rows.
        column = key.name
        raw_slow = stored(conn, table, column, slow_values[column])
        raw_fast = stored(conn, table, column, fast_values[column])
        assert [v for i, v in enumerate(raw_fast) if i not in skip] == [
            v for i, v in enumerate(raw_slow) if i not in skip
        ]

    async with db.read() as conn:
        assert isinstance(conn, SQLiteConnection)
        for values in (slow_values, fast_values):
            params = {"key": values[key.name]}
            reference = conn.sync_connection.execute(get, params).one()
            await conn.execute(get, params)
            assert plan_of(conn, get, params) is not None
            same_values((await conn.execute(get, params)).one(), reference)
    async with db.read() as conn:
        # A fresh read connection uses the plans compiled before.
        assert plan_of(conn, get, {"key": "x"}) is not None


async def test_store_task_cycle_matches_sqlalchemy(db: Database) -> None:
    async with db.write() as conn:
        assert isinstance(conn, SQLiteConnection)
        worker = await workers.create_worker(conn, "alice", utcnow())
        job = await jobs.insert_job(
            conn,
            room_id="room",
            category="c",
            name="n",
            full_name="room:c:n",
            schema={},
            now=utcnow(),
        )
        assert job is not None
        await jobs.link_worker(conn, worker.id, job.id)
        inserted = []
        for i in range(4):
            row = await tasks.insert_task(
                conn,
                job_id=job.id,
                job_name="room:c:n",
                room_id="room",
                payload={"i": i},
                created_by="u",
                now=utcnow(),
            )
            inserted.append(row)
        assert plan_of(conn, task_submit._INSERT_TASK, {
            "id": "", "job_id": "", "job_name": "", "room_id": "", "status": "",
            "created_by": "", "payload": {}, "created_at": utcnow(),
        }) is not None  # fmt: skip
        reference = conn.sync_connection.execute(
            select(*tasks.TASK_COLUMNS).where(task_table.c.id == inserted[-1].id)
        ).one()
        same_values(inserted[-1], reference)

        claimed = [present(await tasks.claim_next(conn, worker.id)) for _ in range(2)]
        assert [row.id for row in claimed] == [inserted[0].id, inserted[1].id]
        assert all(row.status == "claimed" and row.worker_id == worker.id for row in claimed)
        stmt = sqlite.RULES.claim_statement(owner_checked=False)
        assert plan_of(conn, stmt, {"worker_id": worker.id}) is not None

        for row in claimed:
            running = await tasks.transition(
                conn,
                row.id,
                from_status="claimed",
                to_status=TaskStatus.RUNNING,
                error=None,
                now=AWARE,
            )
            assert running is not None
            assert running.started_at == AWARE and running.error is None
        failed = await tasks.transition(
            conn, claimed[1].id, from_status="running", to_status=TaskStatus.FAILED,
            error="boom", now=OTHER_ZONE,
        )  # fmt: skip
        assert failed is not None and failed.error == "boom"
        assert failed.completed_at == OTHER_ZONE and failed.completed_at.tzinfo is UTC
        gone = await tasks.transition(
            conn, claimed[1].id, from_status="running", to_status=TaskStatus.COMPLETED,
            error=None, now=AWARE,
        )  # fmt: skip
        assert gone is None

    async with db.read() as conn:
        assert isinstance(conn, SQLiteConnection)
        for row in inserted:
            await tasks.get_task_with_owner(conn, row.id)
        for row in inserted:
            fast = present(await tasks.get_task_with_owner(conn, row.id))
            assert plan_of(conn, tasks._GET_TASK_WITH_OWNER, {"task_id": row.id}) is not None
            reference = conn.sync_connection.execute(
                tasks._GET_TASK_WITH_OWNER, {"task_id": row.id}
            ).one()
            same_values(fast, reference)
        assert fast.worker_user_id is None
        owned = present(await tasks.get_task_with_owner(conn, claimed[0].id))
        assert owned.worker_user_id == "alice"
        seq, task_id, *_rest = owned
        assert (seq, task_id) == (owned[0], owned.id) == (owned.seq, owned[1])
        # An expanding IN parameter: SQLAlchemy's path, on every call.
        positions = [await tasks.queue_positions(conn, inserted) for _ in range(3)]
        expected = {inserted[0].seq: 0, inserted[1].seq: 0, inserted[2].seq: 1, inserted[3].seq: 2}
        assert positions == [expected] * 3
        assert plan_of(conn, tasks._QUEUE_POSITIONS, {"seqs": [1]}) is None


async def test_result_methods_match_sqlalchemy(db: Database) -> None:
    async with db.write() as conn:
        for name in ("a", "b", "b"):
            await workers.create_worker(conn, name, AWARE)
    by_user = select(worker_table.c.id, worker_table.c.user_id).where(
        worker_table.c.user_id == bindparam("user_id")
    )
    count = select(func.count()).select_from(worker_table)

    async with db.read() as conn:
        assert isinstance(conn, SQLiteConnection)
        await conn.execute(by_user, {"user_id": "a"})
        await conn.execute(count)

        async def both(statement: Any, params: Any, use: Any) -> tuple[Any, Any]:
            assert plan_of(conn, statement, params) is not None
            outcomes = []
            for result in (
                await conn.execute(statement, params),
                conn.sync_connection.execute(statement, params),
            ):
                try:
                    outcomes.append(use(result))
                except exc.SQLAlchemyError as error:
                    outcomes.append(type(error))
            return outcomes[0], outcomes[1]

        uses = {
            "first": lambda r: r.first(),
            "one": lambda r: r.one(),
            "one_or_none": lambda r: r.one_or_none(),
            "all": lambda r: r.all(),
            "scalar": lambda r: r.scalar(),
            "scalar_one": lambda r: r.scalar_one(),
            "scalars": lambda r: list(r.scalars()),
            "scalars_all": lambda r: r.scalars().all(),
            "iterate": lambda r: [tuple(row) for row in r],
            "unpack": lambda r: [(i, u) for i, u in r],
            "first_then_all": lambda r: (r.first(), r.all()),
            "all_twice": lambda r: (r.all(), r.all()),
        }
        for user in ("nobody", "a", "b"):
            for name, use in uses.items():
                fast, slow = await both(by_user, {"user_id": user}, use)
                assert fast == slow, (user, name)
        assert (await both(count, None, lambda r: r.scalar_one())) == (3, 3)
        row = (await conn.execute(count)).one()
        assert row._fields == conn.sync_connection.execute(count).one()._fields
        assert row._mapping == dict(conn.sync_connection.execute(count).one()._mapping)


async def test_rowcount_and_statements_without_rows(db: Database) -> None:
    async with db.write() as conn:
        for name in ("a", "b", "b"):
            await workers.create_worker(conn, name, AWARE)
        rename = (
            update(worker_table)
            .where(worker_table.c.user_id == bindparam("old"))
            .values(user_id=bindparam("new"))
        )
        slow = await conn.execute(rename, {"old": "b", "new": "c"})
        assert plan_of(conn, rename, {"old": "c", "new": "d"}) is not None
        fast = await conn.execute(rename, {"old": "c", "new": "d"})
        assert fast.rowcount == slow.rowcount == 2
        with pytest.raises(exc.ResourceClosedError):
            fast.first()
        assert (await conn.execute(rename, {"old": "zzz", "new": "y"})).rowcount == 0
        users = (await conn.execute(select(worker_table.c.user_id))).scalars().all()
        assert sorted(users) == ["a", "d", "d"]


async def test_errors_are_sqlalchemys(db: Database) -> None:
    insert = worker_table.insert()
    values = {"id": "same", "user_id": "u", "last_heartbeat": AWARE, "created_at": AWARE}
    async with db.write() as conn:
        await conn.execute(insert, values)
    assert plan_of_write(db, insert, values) is not None
    with pytest.raises(exc.IntegrityError) as fast:
        async with db.write() as conn:
            await conn.execute(insert, values)
    with pytest.raises(exc.IntegrityError) as slow:
        async with db.write() as conn:
            assert isinstance(conn, SQLiteConnection)
            conn.sync_connection.execute(insert, values)
    assert type(fast.value.orig) is type(slow.value.orig)
    assert str(fast.value.orig) == str(slow.value.orig)
    # A value the bind processor refuses: a StatementError on both paths.
    bad = {**values, "id": "other", "last_heartbeat": "not a datetime"}
    with pytest.raises(exc.StatementError):
        async with db.write() as conn:
            await conn.execute(insert, bad)


def plan_of_write(db: Database, statement: Any, parameters: Any) -> Any:
    assert db._in_loop is not None
    return db._in_loop._write_statements.plan(statement, parameters)


async def test_other_statements_take_sqlalchemys_path(db: Database) -> None:
    async with db.read() as conn:
        literal = text("SELECT 1 AS one")
        for _ in range(3):
            assert (await conn.execute(literal)).one().one == 1
        assert plan_of(conn, literal) is None
        listing = [str(uuid.uuid4())]
        in_list = select(worker_table.c.id).where(worker_table.c.id.in_(listing))
        for _ in range(3):
            assert (await conn.execute(in_list)).all() == []
        assert plan_of(conn, in_list) is None


async def test_statements_built_per_call_do_not_pile_up(db: Database) -> None:
    async with db.read() as conn:
        assert isinstance(conn, SQLiteConnection)
        assert conn._statements is not None
        before = len(conn._statements._seen)
        for i in range(300):
            stmt = select(worker_table.c.id).where(worker_table.c.id == str(i))
            assert (await conn.execute(stmt)).first() is None
        del stmt
        gc.collect()
        assert len(conn._statements._seen) <= before + 1
