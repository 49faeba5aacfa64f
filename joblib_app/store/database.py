"""``Database``: where every connection of the app comes from, whichever the driver."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from joblib_app import models
from joblib_app.store.connection import Connection
from joblib_app.store.engine import EngineDriver, engine_options
from joblib_app.store.sqlite import GROUP_COMMIT_MAX_BLOCKS, InLoopSQLite, is_sqlite_file

__all__ = ["GROUP_COMMIT_MAX_BLOCKS", "Database", "Driver"]

TABLES: list[Table] = [
    models.worker_table,
    models.job_table,
    models.link_table,
    models.task_table,
    models.provider_table,
]


class Driver(Protocol):
    """What each driver module provides to :class:`Database`."""

    def read(self) -> AbstractAsyncContextManager[Connection]: ...

    def write(self) -> AbstractAsyncContextManager[Connection]: ...

    def autocommit(self) -> AbstractAsyncContextManager[Connection]: ...

    async def dispose(self) -> None: ...


class Database:
    """All connections of the app come from here.

    ``read()`` gives a connection for queries; ``write()`` one in a transaction for changes;
    ``autocommit()`` one for changes whose statements are each correct on their own. The
    driver depends on what the app was given:

    * a SQLite file URL: ``store/sqlite.py``, statements on the event loop, one writer,
      group commit (no request ever answers "database is locked");
    * a PostgreSQL URL: ``store/postgres.py``, asyncpg with prepared statements;
    * a host's engine, or an in-memory SQLite: ``store/engine.py``, through SQLAlchemy.

    ``engine`` (an ``AsyncEngine`` on the same database) stays available for hosts, and
    creates the tables on PostgreSQL.
    """

    def __init__(self, *, url: str | None = None, engine: AsyncEngine | None = None) -> None:
        if engine is None:
            if url is None:
                raise ValueError("Database needs a url or an engine")
            engine = create_async_engine(url, **engine_options(url))
            self._owns_engine = True
        else:
            self._owns_engine = False
        self.engine = engine
        self.dialect = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        # Only for a database the app opens itself: an in-memory database or a host's engine
        # must be reached through that very engine.
        own_url = url if self._owns_engine else None
        self._in_loop: InLoopSQLite | None = None
        self._engine_driver: EngineDriver | None = None
        self._driver: Driver
        if own_url is not None and self.is_sqlite and is_sqlite_file(own_url):
            self._in_loop = InLoopSQLite(own_url)
            self._driver = self._in_loop
        elif own_url is not None and self.dialect == "postgresql":
            from joblib_app.store.postgres import PostgresDriver

            self._driver = PostgresDriver(own_url, engine.dialect)
        else:
            self._engine_driver = EngineDriver(engine, url=own_url)
            self._driver = self._engine_driver

    def read(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for queries; nothing it does is kept.

        On PostgreSQL its statements run in autocommit: inside a READ COMMITTED transaction
        each statement sees what was committed before it began, which is exactly what an
        autocommit statement sees, without the round trips of BEGIN and ROLLBACK.
        """
        return self._driver.read()

    def write(self) -> AbstractAsyncContextManager[Connection]:
        """A connection inside a transaction committed at the end (rolled back on error).

        On a SQLite file the app opens itself, the blocks of concurrent requests share one
        transaction and its COMMIT (see ``InLoopSQLite.write``): a block that raises takes
        back only its own changes, and ``write()`` returns once its changes are committed.
        """
        return self._driver.write()

    def autocommit(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for changes whose statements are each correct on their own.

        On PostgreSQL every statement commits by itself (no ``BEGIN``/``COMMIT`` round
        trips): for the per-task writes, whose one statement either applies atomically or
        changes nothing, and whose follow-up reads tolerate a change in between. Elsewhere
        it is :meth:`write`, so the block is one transaction.
        """
        return self._driver.autocommit()

    async def serialize_across_processes(self, conn: Connection, name: str) -> None:
        """Hold a lock named ``name`` until ``conn``'s transaction ends, across processes.

        For routines that several server processes may run on the same rows at once (the
        worker cleanup), where taking row locks in different orders could deadlock. On
        PostgreSQL an advisory lock; SQLite needs nothing: its writers are one at a time.
        """
        await conn.rules.serialize_across_processes(conn, name)

    async def create_tables(self) -> None:
        """Create the package's tables if absent; safe when several processes start at once."""
        if self._in_loop is not None:
            await self._in_loop.create_tables(TABLES)
            return
        driver = self._engine_driver or EngineDriver(self.engine)
        await driver.create_tables(TABLES)

    async def dispose(self) -> None:
        await self._driver.dispose()
        if self._owns_engine:
            await self.engine.dispose()
