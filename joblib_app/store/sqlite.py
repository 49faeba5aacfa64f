"""The SQLite driver: statements on the event loop, one writer, group commit.

For a SQLite file the app opens itself, statements run on the event loop through blocking
pysqlite connections (:class:`SQLiteConnection`), not through aiosqlite's thread: a
transaction then costs tens of microseconds instead of about a millisecond. Taking the
write lock of another process is retried with ``asyncio.sleep``, so the loop never waits on
it. Writes are group-committed (:meth:`InLoopSQLite.write`), and the statements the store
runs again and again skip most of SQLAlchemy's per-execution work (``sqlite_statements``).

The SQLite side of every dialect difference is here too (:data:`RULES`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    create_engine,
    event,
    exists,
    make_url,
    select,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import Executable

from joblib_app.models import link_table, task_table, worker_table
from joblib_app.store.connection import Connection as StoreConnection
from joblib_app.store.connection import DialectRules, Result
from joblib_app.store.schema import create_or_upgrade
from joblib_app.store.sqlite_statements import CompiledStatements
from joblib_app.store.task_columns import CLAIM_VALUES, IS_PENDING, TASK_COLUMNS

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Blocking waits of the in-loop SQLite path: readers only wait in rare WAL recovery cases;
# writers never block the loop (see ``_begin_immediate``).
SQLITE_READ_BUSY_TIMEOUT_MS = 1_000
SQLITE_WRITE_RETRY_MAX_DELAY = 0.05
# Largest number of ``write()`` blocks sharing one SQLite transaction: a batch that kept
# growing would keep other processes' writers waiting and its callers unanswered.
GROUP_COMMIT_MAX_BLOCKS = 64
_SAVEPOINT = "joblib_write_block"
_SAVEPOINT_SQL = f"SAVEPOINT {_SAVEPOINT}"
_ROLLBACK_SQL = f"ROLLBACK TO {_SAVEPOINT}"
_RELEASE_SQL = f"RELEASE {_SAVEPOINT}"
WRITE_OPTION = "joblib_write"
_T = task_table.c


def _claim_statement(*, owner_checked: bool) -> Update:
    """One ``UPDATE ... WHERE seq = (oldest pending of the worker's jobs) RETURNING``.

    SQLite runs one writer at a time, so the subquery's row is still pending when the
    update applies: no row locks needed.
    """
    conditions = [
        IS_PENDING,
        _T.job_id.in_(
            select(link_table.c.job_id).where(link_table.c.worker_id == bindparam("worker_id"))
        ),
    ]
    if owner_checked:
        # Uncorrelated: evaluated once.
        conditions.append(
            exists().where(
                worker_table.c.id == bindparam("worker_id"),
                worker_table.c.user_id == bindparam("owner_id"),
            )
        )
    candidate = select(_T.seq).where(*conditions).order_by(_T.seq).limit(1)
    return (
        update(task_table)
        .where(_T.seq == candidate.scalar_subquery(), IS_PENDING)
        .values(**CLAIM_VALUES)
        .returning(*TASK_COLUMNS)
    )


class SQLiteRules:
    """SQLite's side of the dialect differences."""

    name = "sqlite"
    takes_row_locks = False

    def __init__(self) -> None:
        self._claims = {
            checked: _claim_statement(owner_checked=checked) for checked in (False, True)
        }

    def claim_statement(self, *, owner_checked: bool) -> Update:
        return self._claims[owner_checked]

    def counting_submit(self, submit: Insert) -> Executable | None:
        # No INSERT inside a WITH in SQLite; and a second statement here is microseconds.
        return None

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        return sqlite_dialect.insert(table).on_conflict_do_nothing()

    def for_update(self, statement: Select[Any]) -> Select[Any]:
        # Writers are one at a time: what a write transaction reads stays as it read it.
        return statement

    async def serialize_across_processes(self, conn: StoreConnection, name: str) -> None:
        # Already serialised: a write transaction holds SQLite's one write lock.
        return None


RULES: DialectRules = SQLiteRules()


def configure_async_engine(engine: AsyncEngine) -> None:
    """WAL, a busy timeout, and explicit BEGIN so that writes take the lock up front.

    For SQLite reached through aiosqlite (an in-memory database, a host's engine).
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
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_sqlite_file(url: str) -> bool:
    """Whether ``url`` names a SQLite file (the in-loop driver's case)."""
    parsed = make_url(url)
    database = parsed.database or ""
    return (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and parsed.query.get("mode") != "memory"
    )


class SQLiteConnection:
    """A blocking pysqlite connection, used right on the event loop (see the module).

    Statements the store runs again and again take the compiled path (see
    ``sqlite_statements.CompiledStatements``); everything else goes through SQLAlchemy's
    ``Connection.execute``, whose ``CursorResult`` is a :class:`Result` too.
    """

    rules = RULES

    def __init__(self, conn: Connection, statements: CompiledStatements | None = None) -> None:
        self.sync_connection = conn
        self._statements = statements
        self.raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]

    @property
    def dialect(self) -> Dialect:
        return self.sync_connection.dialect

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Result:
        statements = self._statements
        if statements is None:
            return self.sync_connection.execute(statement, parameters)
        plan = statements.plan(statement, parameters)
        if plan is not None:
            return plan.run(self.raw, parameters)
        result = self.sync_connection.execute(statement, parameters)
        statements.note(statement, parameters, result)
        return result


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


class _Batch:
    """``write()`` blocks sharing one SQLite transaction, and the futures waiting for its
    COMMIT (one per block: cancelling one caller's wait leaves the others' alone)."""

    __slots__ = ("blocks", "conn", "raw", "waiters")

    def __init__(self, conn: SQLiteConnection) -> None:
        self.conn = conn
        self.raw = conn.raw
        self.blocks = 0
        self.waiters: list[asyncio.Future[None]] = []

    def settle(self, error: BaseException | None) -> None:
        """Tell every block still waiting that the batch committed, or why it did not."""
        for waiter in self.waiters:
            if waiter.done():
                continue  # its caller was cancelled
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        self.waiters.clear()


class WriteBlock:
    """``async with`` one block of :class:`InLoopSQLite`'s current batch (see its
    :meth:`~InLoopSQLite.write`)."""

    __slots__ = ("_batch", "_db")

    def __init__(self, db: InLoopSQLite) -> None:
        self._db = db
        self._batch: _Batch | None = None

    async def __aenter__(self) -> SQLiteConnection:
        db = self._db
        await db.lock.acquire()
        try:
            batch = await db._join_batch()
            try:
                batch.raw.execute(_SAVEPOINT_SQL)
            except sqlite3.Error as exc:
                db._abort(batch, exc)
                raise
        except BaseException:
            db.lock.release()
            raise
        self._batch = batch
        return batch.conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        db = self._db
        batch = self._batch
        assert batch is not None
        raw = batch.raw
        try:
            if exc_type is not None:
                try:
                    raw.execute(_ROLLBACK_SQL)
                    raw.execute(_RELEASE_SQL)
                except sqlite3.Error as error:
                    # The other blocks' changes can no longer be told apart from this one's.
                    db._abort(batch, error)
                return
            try:
                raw.execute(_RELEASE_SQL)
            except sqlite3.Error as error:
                db._abort(batch, error)
                raise
            # Waits outside the lock: the batch's other blocks run meanwhile.
            committed = asyncio.get_running_loop().create_future()
            batch.waiters.append(committed)
        finally:
            db.lock.release()
        await committed


class InLoopSQLite:
    """Blocking pysqlite engines for a SQLite file: one for reads, one for writes.

    Writes are group-committed: the COMMIT, which writes the WAL and is most of a small
    transaction's cost, is shared by the ``write()`` blocks that run in the same turn of
    the event loop (see :meth:`write`).
    """

    def __init__(self, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite+pysqlite")
        # Unbounded overflow: a checkout must never block the event loop.
        options = {"pool_size": 8, "max_overflow": -1, "connect_args": {"check_same_thread": False}}
        self.reader = create_engine(sync_url, **options)
        self.writer = create_engine(sync_url, **options)
        _configure_sync_sqlite(self.reader, SQLITE_READ_BUSY_TIMEOUT_MS)
        _configure_sync_sqlite(self.writer, 0)
        self._read_statements = CompiledStatements(self.reader.dialect)
        self._write_statements = CompiledStatements(self.writer.dialect)
        # Blocks may suspend (an ``await`` inside ``async with db.write()``): the lock keeps
        # them from interleaving on the one write connection, and keeps COMMIT out of them.
        self.lock = asyncio.Lock()
        self._write_conn: SQLiteConnection | None = None
        self._batch: _Batch | None = None
        self._commit_tasks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SQLiteConnection]:
        with self.reader.connect() as conn:
            connection = SQLiteConnection(conn, self._read_statements)
            raw = connection.raw
            raw.execute("BEGIN")
            try:
                yield connection
            finally:
                raw.rollback()

    def write(self) -> WriteBlock:
        """A block of the current batch, returning once the batch is committed.

        Blocks run one at a time under the lock, each in a SAVEPOINT of the batch's
        transaction: a block that raises takes back only its own changes. The first block
        of a batch takes SQLite's write lock (``BEGIN IMMEDIATE``) and schedules the COMMIT
        with ``call_soon``, so it runs after the callbacks already ready in this turn of the
        loop: requests handled in the same turn share it. Callers answer and emit events
        after ``write()`` returns, so each waits for the COMMIT, and all of a batch's blocks
        raise its error if it fails. A caller cancelled while waiting leaves the batch
        alone: its changes are committed with the others'.
        """
        return WriteBlock(self)

    async def _join_batch(self) -> _Batch:
        """The open batch, or a new one in a new transaction; called under the lock."""
        batch = self._batch
        if batch is not None and batch.blocks >= GROUP_COMMIT_MAX_BLOCKS:
            self._commit(batch)
            batch = None
        if batch is None:
            if self._write_conn is None:
                # The lock serialises every write of the process, so one connection serves
                # them all and stays checked out: no pool round per transaction.
                self._write_conn = SQLiteConnection(self.writer.connect(), self._write_statements)
            conn = self._write_conn
            try:
                await _begin_immediate(conn.raw)
            except sqlite3.Error:
                self._drop(conn)
                raise
            batch = self._batch = _Batch(conn)
            asyncio.get_running_loop().call_soon(self._commit_soon, batch)
        batch.blocks += 1
        return batch

    def _commit_soon(self, batch: _Batch) -> None:
        if self._batch is not batch:
            return  # Committed already: the batch was full, or it failed.
        if not self.lock.locked():
            self._commit(batch)
            return
        # A block is running (suspended inside ``async with``): commit after it, in line
        # with the blocks already waiting for the lock, which join this batch.
        task = asyncio.get_running_loop().create_task(self._commit_after_blocks(batch))
        self._commit_tasks.add(task)
        task.add_done_callback(self._commit_tasks.discard)

    async def _commit_after_blocks(self, batch: _Batch) -> None:
        async with self.lock:
            if self._batch is batch:
                self._commit(batch)

    def _commit(self, batch: _Batch) -> None:
        """COMMIT ``batch``; called with no block running. Failures go to its blocks."""
        self._batch = None
        try:
            batch.raw.commit()
        except Exception as exc:
            self._abort(batch, exc)
            return
        batch.settle(None)

    def _abort(self, batch: _Batch, exc: BaseException) -> None:
        """Roll back ``batch``, drop its connection, and fail every block waiting on it."""
        if self._batch is batch:
            self._batch = None
        try:
            batch.raw.rollback()
        except sqlite3.Error:
            # Invalidating the connection below closes it, which discards the transaction.
            logger.warning("Rollback of a failed SQLite write batch failed", exc_info=True)
        self._drop(batch.conn)
        batch.settle(exc)

    def _drop(self, conn: SQLiteConnection) -> None:
        """A connection in an unknown state is not reused, by us or by the pool."""
        if self._write_conn is conn:
            self._write_conn = None
        conn.sync_connection.invalidate()
        conn.sync_connection.close()

    def autocommit(self) -> WriteBlock:
        """:meth:`write`: on SQLite a block is one transaction anyway, and shares a COMMIT."""
        return WriteBlock(self)

    async def create_tables(self, tables: list[Table]) -> None:
        """Create ``tables`` if absent, or upgrade them (one writer at a time: no race
        between processes); see :mod:`joblib_app.store.schema`."""
        async with self.write() as conn:
            create_or_upgrade(conn.sync_connection, tables)

    async def dispose(self) -> None:
        """Commit (or, half done, roll back) the open batch and close every connection."""
        batch = self._batch
        if batch is not None:
            if self.lock.locked():
                # A block is half done: committing would keep half of it.
                self._abort(batch, RuntimeError("database disposed during a write"))
            else:
                self._commit(batch)
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
