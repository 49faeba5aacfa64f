"""Engine, connections and the single-writer discipline for SQLite."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import weakref
import zlib
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import (
    Connection,
    Delete,
    Engine,
    Insert,
    Select,
    TupleType,
    Update,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, ResourceClosedError
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


# Largest number of ``write()`` blocks sharing one SQLite transaction: a batch that kept
# growing would keep other processes' writers waiting and its callers unanswered.
GROUP_COMMIT_MAX_BLOCKS = 64
_SAVEPOINT = "joblib_write_block"
_FAST_STATEMENTS = (Select, Insert, Update, Delete)
_MISSING: Any = object()


class _ResultRow(tuple):
    """Base of the rows of the compiled path: the parts of ``Row`` the app may use."""

    __slots__ = ()
    _fields: tuple[str, ...]

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    @property
    def _t(self) -> tuple[Any, ...]:
        return tuple(self)

    def _tuple(self) -> tuple[Any, ...]:
        return tuple(self)


def _row_class(keys: tuple[str, ...]) -> type[tuple[Any, ...]] | None:
    """A namedtuple class with ``keys`` as fields; ``None`` if they cannot be attributes.

    ``None`` sends the statement to SQLAlchemy, whose ``Row`` handles any key.
    """
    try:
        base = namedtuple("Row", keys)  # type: ignore[misc]
    except ValueError:
        return None
    return type("Row", (base, _ResultRow), {"__slots__": ()})


class _Result:
    """The part of ``CursorResult`` the store uses, over rows fetched at once.

    All rows are fetched when the statement runs: the store's queries return few rows,
    and a statement left half-stepped would keep its read snapshot (or, for RETURNING,
    its write) pending on a connection that serves the next statement. Consumption
    mirrors SQLAlchemy: ``first()``/``one()``/``scalar()`` close the result,
    ``all()`` and iteration use up the remaining rows.
    """

    __slots__ = ("_keys", "_pos", "_rows", "rowcount")

    def __init__(self, keys: tuple[str, ...], rows: list[Any] | None, rowcount: int) -> None:
        self._keys = keys
        self._rows = rows
        self._pos = 0
        self.rowcount = rowcount

    @property
    def returns_rows(self) -> bool:
        return self._rows is not None

    def keys(self) -> list[str]:
        return list(self._keys)

    def _open_rows(self) -> list[Any]:
        if self._rows is None:
            raise ResourceClosedError(
                "This result object does not return rows. It has been closed automatically."
                if self._pos == 0
                else "This result object is closed."
            )
        return self._rows

    def _take_rest(self) -> list[Any]:
        rows = self._open_rows()
        rest = rows[self._pos :] if self._pos else rows
        self._pos = len(rows)
        return rest

    def _close(self) -> None:
        self._rows = None
        self._pos = -1

    def __iter__(self) -> Iterator[Any]:
        return iter(self._take_rest())

    def all(self) -> list[Any]:
        return self._take_rest()

    fetchall = all

    def fetchone(self) -> Any:
        rows = self._open_rows()
        if self._pos >= len(rows):
            return None
        self._pos += 1
        return rows[self._pos - 1]

    def first(self) -> Any:
        rows = self._open_rows()
        row = rows[self._pos] if self._pos < len(rows) else None
        self._close()
        return row

    def one_or_none(self) -> Any:
        rest = self._take_rest()
        self._close()
        if len(rest) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return rest[0] if rest else None

    def one(self) -> Any:
        rest = self._take_rest()
        self._close()
        if not rest:
            raise NoResultFound("No row was found when one was required")
        if len(rest) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was required")
        return rest[0]

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> _ScalarResult:
        return _ScalarResult(self)


class _ScalarResult:
    """``ScalarResult`` of :class:`_Result`: the first column of each row."""

    __slots__ = ("_result",)

    def __init__(self, result: _Result) -> None:
        self._result = result

    def __iter__(self) -> Iterator[Any]:
        return (row[0] for row in self._result._take_rest())

    def all(self) -> list[Any]:
        return [row[0] for row in self._result._take_rest()]

    def first(self) -> Any:
        return self._result.scalar()

    def one(self) -> Any:
        return self._result.scalar_one()

    def one_or_none(self) -> Any:
        return self._result.scalar_one_or_none()


class _Plan:
    """One statement compiled for one set of parameter names, run on the pysqlite connection.

    It does what SQLAlchemy's execution context does for a compiled statement on pysqlite
    (``construct_params``, the bind processors in ``positiontup`` order, the result
    processors by position) without the per-execution context, cache-key and result
    metadata objects, which cost several times the statement itself on SQLite.
    """

    __slots__ = ("_args", "_compiled", "_dialect", "_keys", "_make_row", "_results", "sql")

    def __init__(
        self,
        compiled: Any,
        dialect: Dialect,
        args: list[tuple[str, Callable[[Any], Any] | None]],
        keys: tuple[str, ...] | None,
        row_class: type[tuple[Any, ...]] | None,
        results: list[tuple[int, Callable[[Any], Any]]],
    ) -> None:
        self._compiled = compiled
        self._dialect = dialect
        self.sql: str = compiled.string
        self._args = args
        self._keys = keys
        self._make_row = None if row_class is None else partial(tuple.__new__, row_class)
        self._results = results

    def run(self, raw: sqlite3.Connection, parameters: dict[str, Any] | None) -> _Result:
        args: list[Any] | None = None
        try:
            values = self._compiled.construct_params(parameters or None, escape_names=False)
            args = [
                value if process is None else process(value)
                for name, process in self._args
                for value in (values[name],)
            ]
            cursor = raw.execute(self.sql, args)
            raw_rows = None if cursor.description is None else cursor.fetchall()
            rowcount = cursor.rowcount
        except Exception as exc:
            # The exception classes SQLAlchemy raises (IntegrityError, StatementError...),
            # so that callers see the same errors on both paths.
            wrapped = DBAPIError.instance(
                self.sql,
                args if args is not None else parameters,
                exc,
                sqlite3.Error,
                dialect=self._dialect,
                ismulti=False,
            )
            if wrapped is exc:
                raise
            raise wrapped from exc
        if self._keys is None:
            if raw_rows is not None:
                raise RuntimeError(f"statement unexpectedly returned rows: {self.sql}")
            return _Result((), None, rowcount)
        if raw_rows is None or len(cursor.description) != len(self._keys):
            raise RuntimeError(f"statement returned other columns than compiled: {self.sql}")
        return _Result(self._keys, self._rows(raw_rows), rowcount)

    def _rows(self, raw_rows: list[tuple[Any, ...]]) -> list[Any]:
        make = self._make_row
        assert make is not None
        results = self._results
        if not results:
            return [make(raw) for raw in raw_rows]
        rows = []
        for raw in raw_rows:
            values = list(raw)
            for index, process in results:
                values[index] = process(values[index])
            rows.append(make(values))
        return rows


class _Seen:
    """A statement executed once through SQLAlchemy, and its plans by parameter names."""

    __slots__ = ("keys", "plans", "ref")

    def __init__(self, ref: weakref.ref[Any], keys: tuple[str, ...] | None) -> None:
        self.ref = ref
        self.keys = keys
        self.plans: dict[tuple[str, ...], _Plan | None] = {}


class _CompiledStatements:
    """Plans of the statements run on one in-loop engine, compiled once per statement object.

    A statement gets a plan on its second execution: the first goes through SQLAlchemy
    (whose own cache makes a statement built per call cheaper than compiling it here) and
    records the result's keys, so rows carry exactly SQLAlchemy's names. Statements built
    once at import time, the hot path's, run compiled from then on. Entries are keyed by
    ``id()`` and dropped with the statement through a weak reference, so statements built
    per call neither pile up nor hand their id to a successor.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._seen: dict[int, _Seen] = {}

    def plan(self, statement: Any, parameters: Any) -> _Plan | None:
        seen = self._seen.get(id(statement))
        if seen is None or seen.ref() is not statement:
            return None
        if parameters is None:
            names: tuple[str, ...] = ()
        elif type(parameters) is dict:
            names = tuple(parameters)
        else:
            return None
        plan = seen.plans.get(names, _MISSING)
        if plan is _MISSING:
            canonical = tuple(sorted(names))
            plan = seen.plans.get(canonical, _MISSING)
            if plan is _MISSING:
                plan = self._compile(statement, canonical, seen.keys)
                seen.plans[canonical] = plan
            seen.plans[names] = plan
        return plan

    def note(self, statement: Any, parameters: Any, result: Any) -> None:
        """Remember ``statement`` after SQLAlchemy ran it, if the compiled path may take it."""
        key = id(statement)
        if key in self._seen:
            return
        if not isinstance(statement, _FAST_STATEMENTS) or statement.get_execution_options():
            return
        if parameters is not None and type(parameters) is not dict:
            return
        seen = self._seen

        def forget(ref: weakref.ref[Any]) -> None:
            entry = seen.get(key)
            if entry is not None and entry.ref is ref:
                del seen[key]

        keys = tuple(result.keys()) if result.returns_rows else None
        seen[key] = _Seen(weakref.ref(statement, forget), keys)

    def _compile(
        self, statement: Any, names: tuple[str, ...], keys: tuple[str, ...] | None
    ) -> _Plan | None:
        """The plan of ``statement`` for these parameter names, or ``None`` for SQLAlchemy.

        Compiled like ``Connection.execute`` does (the parameter names are the column keys
        of an INSERT or UPDATE). Anything whose execution needs more than binding values
        by position goes to SQLAlchemy: expanding or literal-execute parameters, Python
        side defaults, implicit RETURNING, tuple types, rows whose names cannot be
        attributes, columns whose types are not known one by one.
        """
        dialect = self._dialect
        compiled = statement.compile(dialect=dialect, column_keys=list(names))
        if (
            compiled.positiontup is None
            or compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.implicit_returning
            or compiled.for_executemany
        ):
            return None
        processors: dict[str, Callable[[Any], Any] | None] = {}
        # In ``bind_names`` order, the last parameter of a name wins, as in SQLAlchemy.
        for bindparam, name in compiled.bind_names.items():
            if isinstance(bindparam.type, TupleType):
                return None
            processors[name] = _bind_processor(bindparam.type, dialect)
        args = [(name, processors.get(name)) for name in compiled.positiontup]
        if keys is None:
            return _Plan(compiled, dialect, args, None, None, [])
        columns = list(statement.exported_columns)
        row_class = _row_class(keys)
        if row_class is None or len(columns) != len(keys):
            return None
        results = [
            (index, process)
            for index, column in enumerate(columns)
            if (process := _result_processor(column.type, dialect)) is not None
        ]
        return _Plan(compiled, dialect, args, keys, row_class, results)


def _bind_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    # ``dialect_impl`` gives the type SQLAlchemy binds with on this dialect: a variant's
    # choice, or a TypeDecorator over the dialect's own impl, whose processor runs
    # ``process_bind_param`` and then the impl's.
    if isinstance(type_, models.UTCDateTime):
        return _utc_to_sqlite_text
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    if isinstance(type_, models.UTCDateTime):
        return _sqlite_text_to_utc
    return type_.dialect_impl(dialect).result_processor(dialect, None)


# ``UTCDateTime`` on SQLite, as SQLAlchemy's processors store and read it (naive UTC text,
# ``YYYY-MM-DD HH:MM:SS.ffffff``) with the C datetime functions instead of its format
# string and regular expression: every task row carries three of them.
def _utc_to_sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def _sqlite_text_to_utc(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class SyncConnection:
    """The part of ``AsyncConnection`` the store uses, over a blocking pysqlite connection.

    On a local SQLite file a statement takes microseconds, far less than handing it to
    aiosqlite's thread and back (several hops per transaction, each a thread wake-up and a
    GIL hand-over), so the store's statements run right on the event loop.

    Statements the store runs again and again take the compiled path (see
    :class:`_CompiledStatements`): SQLAlchemy's per-execution work costs several times what
    SQLite spends on a lookup by key. Everything else goes through ``Connection.execute``.
    """

    def __init__(self, conn: Connection, statements: _CompiledStatements | None = None) -> None:
        self.sync_connection = conn
        self.dialect = conn.dialect
        self._statements = statements
        self._raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        statements = self._statements
        if statements is None:
            return self.sync_connection.execute(statement, parameters)
        plan = statements.plan(statement, parameters)
        if plan is not None:
            return plan.run(self._raw, parameters)
        result = self.sync_connection.execute(statement, parameters)
        statements.note(statement, parameters, result)
        return result

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.sync_connection, *args, **kwargs)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


class _Batch:
    """``write()`` blocks sharing one SQLite transaction, and the future of its COMMIT."""

    __slots__ = ("blocks", "committed", "conn", "raw")

    def __init__(self, conn: SyncConnection, committed: asyncio.Future[None]) -> None:
        self.conn = conn
        self.raw = conn._raw
        self.committed = committed
        self.blocks = 0


class _InLoopSQLite:
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
        self._read_statements = _CompiledStatements(self.reader.dialect)
        self._write_statements = _CompiledStatements(self.writer.dialect)
        # Blocks may suspend (an ``await`` inside ``async with db.write()``): the lock keeps
        # them from interleaving on the one write connection, and keeps COMMIT out of them.
        self.lock = asyncio.Lock()
        self._write_conn: SyncConnection | None = None
        self._batch: _Batch | None = None
        self._commit_tasks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SyncConnection]:
        with self.reader.connect() as conn:
            raw = conn.connection.driver_connection
            raw.execute("BEGIN")
            try:
                yield SyncConnection(conn, self._read_statements)
            finally:
                raw.rollback()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SyncConnection]:
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
        async with self.lock:
            batch = await self._join_batch()
            raw = batch.raw
            try:
                raw.execute(f"SAVEPOINT {_SAVEPOINT}")
            except sqlite3.Error as exc:
                self._abort(batch, exc)
                raise
            try:
                yield batch.conn
            except BaseException:
                try:
                    raw.execute(f"ROLLBACK TO {_SAVEPOINT}")
                    raw.execute(f"RELEASE {_SAVEPOINT}")
                except sqlite3.Error as exc:
                    # The other blocks' changes can no longer be told apart from this one's.
                    self._abort(batch, exc)
                raise
            try:
                raw.execute(f"RELEASE {_SAVEPOINT}")
            except sqlite3.Error as exc:
                self._abort(batch, exc)
                raise
        # Shielded: cancelling one waiting caller must not cancel the batch's future,
        # which every other block of the batch awaits.
        await asyncio.shield(batch.committed)

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
                self._write_conn = SyncConnection(self.writer.connect(), self._write_statements)
            conn = self._write_conn
            try:
                await _begin_immediate(conn._raw)
            except sqlite3.Error:
                self._drop(conn)
                raise
            loop = asyncio.get_running_loop()
            batch = self._batch = _Batch(conn, loop.create_future())
            loop.call_soon(self._commit_soon, batch)
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
        if not batch.committed.done():
            batch.committed.set_result(None)

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
        if not batch.committed.done():
            batch.committed.set_exception(exc)

    def _drop(self, conn: SyncConnection) -> None:
        """A connection in an unknown state is not reused, by us or by the pool."""
        if self._write_conn is conn:
            self._write_conn = None
        conn.sync_connection.invalidate()
        conn.sync_connection.close()

    def dispose(self) -> None:
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
    waits on it. Writes there are group-committed, and the statements the store runs
    again and again skip most of SQLAlchemy's per-execution work (:class:`SyncConnection`).
    ``engine`` (aiosqlite) stays available for hosts and for other databases.
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
        self._autocommit_engine: AsyncEngine | None = None
        if self.dialect == "postgresql":
            if self._owns_engine and url is not None:
                # A pool of its own: its connections are in autocommit from the start, so
                # the pre-ping is one round trip, not BEGIN, ping and ROLLBACK.
                self._autocommit_engine = create_async_engine(
                    url, isolation_level="AUTOCOMMIT", **_engine_options(url)
                )
            else:
                self._autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for queries; nothing it does is kept.

        On PostgreSQL its statements run in autocommit. Inside a READ COMMITTED transaction
        each statement sees what was committed before it began, which is exactly what an
        autocommit statement sees; without the transaction a read saves the round trips of
        BEGIN and ROLLBACK, and of the pre-ping's own BEGIN and ROLLBACK.
        """
        if self._in_loop is not None:
            async with self._in_loop.read() as conn:
                yield conn  # type: ignore[misc]
            return
        if self._autocommit_engine is not None:
            async with self._autocommit_engine.connect() as conn, _discard_if_cancelled(conn):
                yield conn
            return
        async with self.engine.connect() as conn:
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction committed at the end (rolled back on error).

        On a SQLite file the app opens itself, the blocks of concurrent requests share one
        transaction and its COMMIT (see :meth:`_InLoopSQLite.write`): a block that raises
        takes back only its own changes, and ``write()`` returns once its changes are
        committed, as before.
        """
        if self._in_loop is not None:
            # Takes its own lock, and waits for the group commit outside of it: holding the
            # lock until the COMMIT would leave no block to share it with.
            async with self._in_loop.write() as conn:
                yield conn  # type: ignore[misc]
            return
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(**{_WRITE_OPTION: True})
                async with conn.begin():
                    yield conn

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection for changes whose statements are each correct on their own.

        On PostgreSQL every statement commits by itself (no ``BEGIN``/``COMMIT`` round
        trips): for the per-task writes, whose one statement either applies atomically or
        changes nothing, and whose follow-up reads tolerate a change in between. Elsewhere
        it is :meth:`write`, so the block is one transaction.
        """
        if self._autocommit_engine is None:
            async with self.write() as conn:
                yield conn
            return
        async with self._autocommit_engine.connect() as conn, _discard_if_cancelled(conn):
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
            if self._autocommit_engine is not None:
                await self._autocommit_engine.dispose()
            await self.engine.dispose()


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


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if url.startswith("postgresql"):
        return {"pool_size": 10, "max_overflow": 20, "pool_pre_ping": True}
    return {}
