"""The driver over a SQLAlchemy ``AsyncEngine``: a host's engine, or an in-memory SQLite.

Everything runs through SQLAlchemy's async API. The app's own SQLite files and PostgreSQL
URLs have faster drivers (``store/sqlite.py``, ``store/postgres.py``); this one serves the
cases those cannot: a database only reachable through the host's engine, or one that
lives in a single aiosqlite connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.expression import Executable

from joblib_app.store import sqlite
from joblib_app.store.connection import DialectRules, Result
from joblib_app.store.schema import create_or_upgrade


def rules_for(dialect_name: str) -> DialectRules:
    """The dialect differences of a database, by SQLAlchemy dialect name."""
    if dialect_name == "postgresql":
        # Imported here: the PostgreSQL driver needs asyncpg, an optional dependency.
        from joblib_app.store import postgres

        return postgres.RULES
    return sqlite.RULES


class EngineConnection:
    """A SQLAlchemy ``AsyncConnection`` as a store connection."""

    __slots__ = ("_conn", "rules")

    def __init__(self, conn: AsyncConnection, rules: DialectRules) -> None:
        self._conn = conn
        self.rules = rules

    @property
    def dialect(self) -> Dialect:
        return self._conn.dialect

    @property
    def async_connection(self) -> AsyncConnection:
        """The SQLAlchemy connection underneath, for what the contract does not cover."""
        return self._conn

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Result:
        return await self._conn.execute(statement, parameters)


class EngineDriver:
    """Connections of an ``AsyncEngine``; see :class:`joblib_app.store.database.Database`."""

    def __init__(self, engine: AsyncEngine, *, url: str | None = None) -> None:
        self.engine = engine
        self._rules = rules_for(engine.dialect.name)
        self._is_sqlite = engine.dialect.name == "sqlite"
        # SQLite allows one writer: the lock keeps this process's writers in line, and
        # ``BEGIN IMMEDIATE`` plus the busy timeout covers other processes.
        self._write_lock = asyncio.Lock() if self._is_sqlite else None
        if self._is_sqlite:
            sqlite.configure_async_engine(engine)
        self._own_autocommit = False
        self._autocommit_engine: AsyncEngine | None = None
        if engine.dialect.name == "postgresql":
            if url is not None:
                # A pool of its own: its connections are in autocommit from the start, so
                # the pre-ping is one round trip, not BEGIN, ping and ROLLBACK.
                self._autocommit_engine = create_async_engine(
                    url, isolation_level="AUTOCOMMIT", **engine_options(url)
                )
                self._own_autocommit = True
            else:
                self._autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[EngineConnection]:
        if self._autocommit_engine is not None:
            async with self._autocommit_engine.connect() as conn, _discard_if_cancelled(conn):
                yield EngineConnection(conn, self._rules)
            return
        async with self.engine.connect() as conn:
            async with conn.begin():
                yield EngineConnection(conn, self._rules)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[EngineConnection]:
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield EngineConnection(conn, self._rules)
            return
        async with self._write_lock:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(**{sqlite.WRITE_OPTION: True})
                async with conn.begin():
                    yield EngineConnection(conn, self._rules)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[EngineConnection]:
        if self._autocommit_engine is None:
            async with self.write() as written:
                yield written
            return
        async with self._autocommit_engine.connect() as conn, _discard_if_cancelled(conn):
            yield EngineConnection(conn, self._rules)

    async def create_tables(self, tables: list[Table]) -> None:
        async with self.write() as conn:
            # Concurrent CREATE TABLE IF NOT EXISTS still races on PostgreSQL's catalog.
            await self._rules.serialize_across_processes(conn, "joblib_app.create_tables")
            await conn.async_connection.run_sync(create_or_upgrade, tables)

    async def dispose(self) -> None:
        """Close the pool this driver opened (the engine itself belongs to its owner)."""
        if self._own_autocommit and self._autocommit_engine is not None:
            await self._autocommit_engine.dispose()


@asynccontextmanager
async def _discard_if_cancelled(conn: AsyncConnection) -> AsyncIterator[None]:
    """Never return to the pool a connection whose statement a cancellation interrupted.

    asyncpg may still be mid-operation on it; pooled again, it would fail the next request
    with "another operation is in progress". Invalidated, it is closed and replaced.
    """
    try:
        yield
    except asyncio.CancelledError:
        await conn.invalidate()
        raise


def engine_options(url: str) -> dict[str, Any]:
    """``create_async_engine`` options for the app's own engines."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": sqlite.SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if url.startswith("postgresql"):
        return {"pool_size": 10, "max_overflow": 20, "pool_pre_ping": True}
    return {}
