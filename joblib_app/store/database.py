"""Engine, connections and the single-writer discipline for SQLite."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlmodel import SQLModel

from joblib_app import models

logger = logging.getLogger(__name__)

_TABLES = [
    models.worker_table,
    models.job_table,
    models.link_table,
    models.task_table,
    models.provider_table,
]
_WRITE_OPTION = "joblib_write"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, a busy timeout, and explicit BEGIN so that writes take the lock up front.

    pysqlite's own implicit transactions would start a write as a read and upgrade later,
    which fails at once with "database is locked" when another process wrote in between.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """All connections of the app come from here.

    ``read()`` gives a connection in a transaction for queries; ``write()`` gives one for
    changes. On SQLite, writes are serialised in process by an asyncio lock (SQLite allows
    one writer), and ``BEGIN IMMEDIATE`` plus the busy timeout covers other processes, so
    no request ever answers "database is locked".
    """

    def __init__(self, *, url: str | None = None, engine: AsyncEngine | None = None) -> None:
        if engine is None:
            if url is None:
                raise ValueError("Database needs a url or an engine")
            engine = create_async_engine(url, **_engine_options(url))
            self._owns_engine = True
        else:
            self._owns_engine = False
        self.engine = engine
        self.dialect = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            _configure_sqlite(engine)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction that is rolled back at the end."""
        async with self.engine.connect() as conn:
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction committed at the end (rolled back on error)."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(**{_WRITE_OPTION: True})
                async with conn.begin():
                    yield conn

    async def serialize_across_processes(self, conn: AsyncConnection, name: str) -> None:
        """Hold a PostgreSQL advisory lock named ``name`` until ``conn``'s transaction ends.

        For routines that several server processes may run on the same rows at once (the
        worker cleanup), where taking row locks in different orders could deadlock. SQLite
        needs nothing: its writers are already one at a time.
        """
        if self.dialect == "postgresql":
            key = zlib.crc32(name.encode())
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    async def create_tables(self) -> None:
        """Create the package's tables if absent; safe when several processes start at once."""
        async with self.write() as conn:
            # Concurrent CREATE TABLE IF NOT EXISTS still races on PostgreSQL's catalog.
            await self.serialize_across_processes(conn, "joblib_app.create_tables")
            await conn.run_sync(SQLModel.metadata.create_all, tables=_TABLES)

    async def dispose(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if url.startswith("postgresql"):
        return {"pool_size": 10, "max_overflow": 20, "pool_pre_ping": True}
    return {}
