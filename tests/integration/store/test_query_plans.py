"""The hot queries use the partial index of pending tasks, so their cost follows the queue,
not the table (finished tasks stay in the table for ever).

On PostgreSQL the plan checked is the generic one a prepared statement settles on, where
bound values are unknown: the pending condition must be a literal for the index to serve.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from joblib_app.models import utcnow
from joblib_app.store import postgres, sqlite, tasks
from joblib_app.store.database import Database
from tests.support.databases import database

PENDING_INDEX = "ix_joblib_task_pending"


async def _plan(
    db: Database,
    statement: object,
    params: dict[str, object],
    *,
    realistic: bool = False,
    cache_mode: str = "force_generic_plan",
) -> str:
    """The database's plan for ``statement`` as the store runs it (bound parameters).

    On PostgreSQL a prepared statement's plan, generic by default (bound values unknown to
    the planner); unless ``realistic``, with sequential scans disabled, which asks whether
    an index *can* serve rather than whether it will.
    """
    # The engine itself (not the store's in-loop SQLite path): plain driver SQL on both.
    async with db.engine.connect() as conn:
        # ``statement`` is typed as the store's executable, which need not be compilable;
        # these are SQLAlchemy constructs.
        compiled = statement.compile(dialect=conn.dialect)  # type: ignore[attr-defined]
        expanded = compiled.construct_expanded_state(params)
        sql = expanded.statement
        args = tuple(expanded.parameters[name] for name in expanded.positiontup or ())
        if db.dialect == "postgresql":
            if not realistic:
                await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            await conn.exec_driver_sql(f"SET LOCAL plan_cache_mode = {cache_mode}")
            await conn.exec_driver_sql("PREPARE joblib_plan_probe AS " + sql)
            values = ", ".join(_sql_literal(a) for a in args)
            probe = "EXPLAIN EXECUTE joblib_plan_probe" + (f"({values})" if args else "")
            rows = (await conn.exec_driver_sql(probe)).all()
            await conn.exec_driver_sql("DEALLOCATE joblib_plan_probe")
        else:
            rows = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, args)).all()
        await conn.rollback()
    return "\n".join(str(r[-1]) for r in rows)


def _sql_literal(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


@contextlib.asynccontextmanager
async def _opened(url: str) -> AsyncIterator[Database]:
    db = Database(url=url)
    await db.create_tables()
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with _opened(database_url) as db:
        yield db


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    async with _opened(f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}") as db:
        yield db


@pytest.fixture
async def postgres_db(postgres_url: str) -> AsyncIterator[Database]:
    async with _opened(postgres_url) as db:
        yield db


@pytest.mark.parametrize("owner_checked", [False, True])
async def test_sqlite_claim_searches_the_pending_index(
    sqlite_db: Database, owner_checked: bool
) -> None:
    statement = sqlite.RULES.claim_statement(owner_checked=owner_checked)
    plan = await _plan(sqlite_db, statement, {"worker_id": "w", "owner_id": "u", "now": utcnow()})
    assert PENDING_INDEX in plan, plan


async def test_postgres_claim_walks_the_pending_index_of_a_deep_queue(
    postgres_db: Database,
) -> None:
    """A young table with a deep queue behind finished tasks, statistics up to date, no
    planner switches: the case where a plain ``ORDER BY seq`` makes PostgreSQL walk the
    primary key past the finished tasks (with the values known; a generic plan, not
    knowing the LIMIT, happens to choose well)."""
    db = postgres_db
    rows = """INSERT INTO joblib_task (id, job_id, job_name, room_id, status, created_by,
        payload, created_at) SELECT gen_random_uuid()::text, '{job}', 'r:modifiers:{job}',
        'r', '{status}', 'u', '{{}}', now() FROM generate_series(1, {n})"""
    async with db.engine.begin() as conn:
        # Finished tasks first, then other queues, then this worker's: seq order is
        # arrival order, as in a real table.
        await conn.exec_driver_sql(rows.format(job="j", status="completed", n=19000))
        await conn.exec_driver_sql(rows.format(job="other", status="pending", n=20000))
        await conn.exec_driver_sql(rows.format(job="k", status="pending", n=5000))
        await conn.exec_driver_sql(rows.format(job="j", status="pending", n=20000))
        await conn.exec_driver_sql(
            "INSERT INTO joblib_worker_job (worker_id, job_id) VALUES ('w', 'j'), ('w', 'k')"
        )
        await conn.exec_driver_sql("ANALYZE")
    for cache_mode in ("force_custom_plan", "force_generic_plan"):
        plan = await _plan(
            db,
            postgres.RULES.claim_statement(owner_checked=True),
            {"worker_id": "w", "owner_id": "u", "now": utcnow()},
            realistic=True,
            cache_mode=cache_mode,
        )
        assert PENDING_INDEX in plan, plan
        lines = plan.splitlines()
        for number, line in enumerate(lines):
            if "joblib_task_pkey" in line:
                # Only the final lookup of the chosen row by its key, never a walk in order.
                assert "Index Cond: (seq =" in lines[number + 1], plan


async def test_queue_position_counts_on_the_pending_index(db: Database) -> None:
    plan = await _plan(db, tasks._QUEUE_POSITIONS, {"seqs": [1, 2]})
    assert PENDING_INDEX in plan, plan
