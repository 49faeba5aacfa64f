"""Engine, connections and the single-writer discipline for SQLite."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
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
# Blocking waits of the in-loop SQLite path: readers only wait in rare WAL recovery cases;
# writers never block the loop (see ``_begin_immediate``).
SQLITE_READ_BUSY_TIMEOUT_MS = 1_000
SQLITE_WRITE_RETRY_MAX_DELAY = 0.05


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


class SyncConnection:
    """The part of ``AsyncConnection`` the store uses, over a blocking pysqlite connection.

    On a local SQLite file a statement takes microseconds, far less than handing it to
    aiosqlite's thread and back (several hops per transaction, each a thread wake-up and a
    GIL hand-over), so the store's statements run right on the event loop.
    """

    def __init__(self, conn: Connection) -> None:
        self.sync_connection = conn
        self.dialect = conn.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync_connection.execute(statement, parameters)

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.sync_connection, *args, **kwargs)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


class _InLoopSQLite:
    """Blocking pysqlite engines for a SQLite file: one for reads, one for writes."""

    def __init__(self, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite+pysqlite")
        # Unbounded overflow: a checkout must never block the event loop.
        options = {"pool_size": 8, "max_overflow": -1, "connect_args": {"check_same_thread": False}}
        self.reader = create_engine(sync_url, **options)
        self.writer = create_engine(sync_url, **options)
        _configure_sync_sqlite(self.reader, SQLITE_READ_BUSY_TIMEOUT_MS)
        _configure_sync_sqlite(self.writer, 0)
        self._write_conn: SyncConnection | None = None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SyncConnection]:
        with self.reader.connect() as conn:
            raw = conn.connection.driver_connection
            raw.execute("BEGIN")
            try:
                yield SyncConnection(conn)
            finally:
                raw.rollback()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SyncConnection]:
        """Callers hold the process's write lock, so one connection serves every write and
        is kept checked out: no pool round per transaction."""
        if self._write_conn is None:
            self._write_conn = SyncConnection(self.writer.connect())
        conn = self._write_conn
        raw = conn.sync_connection.connection.driver_connection
        try:
            await _begin_immediate(raw)
            try:
                yield conn
            except BaseException:
                raw.rollback()
                raise
            raw.commit()
        except sqlite3.Error:
            # A connection in an unknown state is not reused.
            self._write_conn = None
            conn.sync_connection.close()
            raise

    def dispose(self) -> None:
        if self._write_conn is not None:
            self._write_conn.sync_connection.close()
            self._write_conn = None
        self.reader.dispose()
        self.writer.dispose()


async def _begin_immediate(raw: sqlite3.Connection) -> None:
    """Take SQLite's write lock without blocking the loop while another process holds it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or loop.time() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, SQLITE_WRITE_RETRY_MAX_DELAY)


def _configure_sync_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver: transactions are the explicit BEGINs above.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _is_sqlite_file(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database or ""
    return (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and parsed.query.get("mode") != "memory"
    )


class Database:
    """All connections of the app come from here.

    ``read()`` gives a connection in a transaction for queries; ``write()`` gives one for
    changes. On SQLite, writes are serialised in process by an asyncio lock (SQLite allows
    one writer), and ``BEGIN IMMEDIATE`` plus the busy timeout covers other processes, so
    no request ever answers "database is locked".

    For a SQLite file the app opens itself, statements run on the event loop through
    blocking pysqlite connections (:class:`SyncConnection`), not through aiosqlite's thread:
    a transaction then costs tens of microseconds instead of about a millisecond. Taking
    the write lock of another process is retried with ``asyncio.sleep``, so the loop never
    waits on it. ``engine`` (aiosqlite) stays available for hosts and for other databases.
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
        # Only for a file the app opens itself: an in-memory database or a host's engine
        # must be reached through that very engine.
        self._in_loop = (
            _InLoopSQLite(url)
            if self.is_sqlite and self._owns_engine and url and _is_sqlite_file(url)
            else None
        )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction that is rolled back at the end."""
        if self._in_loop is not None:
            async with self._in_loop.read() as conn:
                yield conn  # type: ignore[misc]
            return
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
            if self._in_loop is not None:
                async with self._in_loop.write() as conn:
                    yield conn  # type: ignore[misc]
                return
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
        if self._in_loop is not None:
            self._in_loop.dispose()
        if self._owns_engine:
            await self.engine.dispose()


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if url.startswith("postgresql"):
        return {"pool_size": 10, "max_overflow": 20, "pool_pre_ping": True}
    return {}
