"""The hot queries use the partial index of pending tasks, so their cost follows the queue,
not the table (finished tasks stay in the table for ever).

On PostgreSQL the plan checked is the generic one a prepared statement settles on, where
bound values are unknown: the pending condition must be a literal for the index to serve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from joblib_app.store import tasks
from joblib_app.store.database import Database
from tests.acceptance.support import database

PENDING_INDEX = "ix_joblib_task_pending"


async def _plan(db: Database, statement: object, params: dict[str, object]) -> str:
    """The database's plan for ``statement`` as the store runs it (bound parameters)."""
    # The engine itself (not the store's in-loop SQLite path): plain driver SQL on both.
    async with db.engine.connect() as conn:
        compiled = statement.compile(dialect=conn.dialect)  # type: ignore[attr-defined]
        expanded = compiled.construct_expanded_state(params)
        sql = expanded.statement
        args = tuple(expanded.parameters[name] for name in expanded.positiontup or ())
        if db.dialect == "postgresql":
            # Tiny tables make a sequential scan cheapest; ask whether the index *can* serve,
            # in the generic plan that a prepared statement ends up with (bound values
            # unknown to the planner).
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
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


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    db = Database(url=database_url)
    await db.create_tables()
    try:
        yield db
    finally:
        await db.dispose()


@pytest.mark.parametrize("owner_checked", [False, True])
async def test_claim_searches_the_pending_index(db: Database, owner_checked: bool) -> None:
    dialect = "postgresql" if db.dialect == "postgresql" else "other"
    statement = tasks._CLAIM[(dialect, owner_checked)]
    plan = await _plan(db, statement, {"worker_id": "w", "owner_id": "u"})
    assert PENDING_INDEX in plan, plan


async def test_queue_position_counts_on_the_pending_index(db: Database) -> None:
    plan = await _plan(db, tasks._QUEUE_POSITIONS, {"seqs": [1, 2]})
    assert PENDING_INDEX in plan, plan
