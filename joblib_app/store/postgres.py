"""The PostgreSQL driver: asyncpg connections of our own pool, prepared statements.

Every statement, the hot path's (claim, submit, status change, task read, heartbeat)
first, runs on asyncpg directly: compiled once by SQLAlchemy (``postgres_statements``),
prepared once per connection, then executed with its values. No greenlet hop and no
per-execution SQLAlchemy objects. ``read()`` and ``autocommit()`` run statements in
autocommit (inside READ COMMITTED each statement sees what was committed before it
began, which is what an autocommit statement sees: the BEGIN/COMMIT round trips are
saved); ``write()`` is a transaction.

The PostgreSQL side of every dialect difference is here too (:data:`RULES`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy import (
    Insert,
    Select,
    Table,
    Update,
    any_,
    bindparam,
    exists,
    func,
    make_url,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import Executable

from joblib_app.models import link_table, task_table, worker_table
from joblib_app.store.connection import Connection, DialectRules, FetchedResult
from joblib_app.store.connection_loss import is_connection_lost
from joblib_app.store.postgres_statements import PostgresStatements
from joblib_app.store.task_columns import (
    CLAIM_VALUES,
    IS_PENDING,
    PENDING,
    TASK_COLUMNS,
    status_is,
)

logger = logging.getLogger(__name__)

POOL_SIZE = 30
# Prepared statements kept per connection; the store has a few dozen.
PREPARED_PER_CONNECTION = 256
_T = task_table.c


def _claim_statement(*, owner_checked: bool) -> Update:
    """The oldest of the heads of the worker's job queues, claimed in one statement.

    Each head comes from a ``LATERAL`` subquery with ``FOR UPDATE SKIP LOCKED``, so
    concurrent claimers take different rows instead of waiting for one another (without
    it, READ COMMITTED let several claimers take one row). The head is asked for as
    ``job_id = ANY(ARRAY[job])`` ordered by ``(job_id, seq)``: only the pending index gives
    that order. Written plainly (``job_id = x ORDER BY seq``), the planner may walk the
    primary key in ``seq`` order instead, past every older task of the table: measured 9
    to 20 ms a claim with 20,000 tasks queued behind finished ones, against under 1 ms.
    """
    queued = task_table.alias("queued")
    head = (
        select(queued.c.seq)
        .where(
            queued.c.job_id == any_(postgresql.array([link_table.c.job_id])),
            status_is(queued.c.status, PENDING),
        )
        .order_by(queued.c.job_id, queued.c.seq)
        .limit(1)
        .with_for_update(skip_locked=True)
        .lateral("head")
    )
    conditions = [link_table.c.worker_id == bindparam("worker_id")]
    if owner_checked:
        conditions.append(
            exists().where(
                worker_table.c.id == bindparam("worker_id"),
                worker_table.c.user_id == bindparam("owner_id"),
            )
        )
    oldest = (
        select(head.c.seq)
        .select_from(link_table.join(head, true()))
        .where(*conditions)
        .order_by(head.c.seq)
        .limit(1)
    )
    return (
        update(task_table)
        .where(_T.seq == oldest.scalar_subquery(), IS_PENDING)
        .values(**CLAIM_VALUES)
        .returning(*TASK_COLUMNS)
    )


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


class PostgresRules:
    """PostgreSQL's side of the dialect differences."""

    name = "postgresql"
    takes_row_locks = True

    def __init__(self) -> None:
        self._claims = {
            checked: _claim_statement(owner_checked=checked) for checked in (False, True)
        }
        self._counting: dict[int, tuple[Insert, Executable]] = {}

    def claim_statement(self, *, owner_checked: bool) -> Update:
        return self._claims[owner_checked]

    def counting_submit(self, submit: Insert) -> Executable | None:
        """The submit and the count of its queue as one statement: one round trip, not two.

        The count runs in the statement's snapshot, which does not hold the new row: the
        tasks ahead plus one. Built once per submit statement (the store has one).
        """
        entry = self._counting.get(id(submit))
        if entry is not None and entry[0] is submit:
            return entry[1]
        inserted = submit.cte("submitted")
        ahead = (
            select(func.count())
            .select_from(task_table)
            .where(_T.job_id == inserted.c.job_id, IS_PENDING, _T.seq < inserted.c.seq)
            .scalar_subquery()
        )
        counting = select(inserted.c.seq, inserted.c.job_id, (ahead + 1).label("position"))
        self._counting[id(submit)] = (submit, counting)
        return counting

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        return postgresql.insert(table).on_conflict_do_nothing()

    def for_update(self, statement: Select[Any]) -> Select[Any]:
        return statement.with_for_update()

    async def serialize_across_processes(self, conn: Connection, name: str) -> None:
        # For routines several server processes may run on the same rows at once (the
        # worker cleanup), where row locks taken in different orders could deadlock.
        await conn.execute(_ADVISORY_LOCK, {"k": zlib.crc32(name.encode())})


RULES: DialectRules = PostgresRules()


def _json_encode(value: str) -> bytes:
    return value.encode()


def _json_decode(data: bytes) -> Any:
    return json.loads(data)


def _jsonb_encode(value: str) -> bytes:
    # ``\x01``: the version byte of jsonb's binary format.
    return b"\x01" + value.encode()


def _jsonb_decode(data: bytes) -> Any:
    return json.loads(data[1:])


async def _set_codecs(raw: asyncpg.Connection) -> None:
    """JSON as SQLAlchemy's asyncpg dialect sets it: its bind processors give text."""
    await raw.set_type_codec(
        "json", encoder=_json_encode, decoder=_json_decode, schema="pg_catalog", format="binary"
    )
    await raw.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )


class _Pooled:
    """An asyncpg connection of the pool and its prepared statements."""

    __slots__ = ("prepared", "raw")

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw
        self.prepared: dict[str, _Prepared] = {}


class PostgresConnection:
    """A pooled asyncpg connection as a store connection (see the module docstring)."""

    __slots__ = ("_pooled", "_statements")
    rules = RULES

    def __init__(self, pooled: _Pooled, statements: PostgresStatements) -> None:
        self._pooled = pooled
        self._statements = statements

    @property
    def dialect(self) -> Dialect:
        return self._statements.dialect

    @property
    def raw(self) -> asyncpg.Connection:
        """The asyncpg connection, for what the contract does not cover."""
        return self._pooled.raw

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> FetchedResult:
        plan, extracted = self._statements.plan(statement, parameters)
        sql, args = plan.bind(parameters, extracted)
        prepared = self._pooled.prepared.get(sql) or await self._prepare(sql)
        records = await prepared.statement.fetch(*args)
        rowcount = _rowcount(prepared.statement.get_statusmsg(), len(records))
        if not plan.rows_expected or not prepared.type_oids:
            return FetchedResult(None, rowcount)
        return FetchedResult(plan.rows(records, prepared.type_oids), rowcount)

    async def _prepare(self, sql: str) -> _Prepared:
        prepared = self._pooled.prepared
        if len(prepared) >= PREPARED_PER_CONNECTION:
            del prepared[next(iter(prepared))]
        statement = await self._pooled.raw.prepare(sql)
        types = tuple(attribute.type.oid for attribute in statement.get_attributes())
        entry = prepared[sql] = _Prepared(statement, types)
        return entry


class _Prepared:
    """A prepared statement of one connection, and the types of its result's columns."""

    __slots__ = ("statement", "type_oids")

    def __init__(self, statement: Any, type_oids: tuple[int, ...]) -> None:
        self.statement = statement
        self.type_oids = type_oids


def _rowcount(status: str | None, fetched: int) -> int:
    """Rows changed (``UPDATE 3``, ``INSERT 0 1``) or returned, from the command status."""
    if status:
        last = status.rsplit(" ", 1)[-1]
        if last.isdigit():
            return int(last)
    return fetched


class PostgresDriver:
    """asyncpg connections for a PostgreSQL URL; see ``store.database.Database``."""

    def __init__(self, url: str, dialect: Dialect) -> None:
        parsed = make_url(url).set(drivername="postgresql")
        self._dsn = parsed.render_as_string(hide_password=False)
        self._statements = PostgresStatements(dialect)
        self._idle: deque[_Pooled] = deque()
        self._size = 0
        self._waiters: deque[asyncio.Future[_Pooled]] = deque()
        self._closed = False

    async def _acquire(self) -> _Pooled:
        while self._idle:
            pooled = self._idle.pop()
            # Terminated by the server (a failover, ``pg_terminate_backend``) while idle:
            # asyncpg has seen the socket close.
            if not pooled.raw.is_closed():
                return pooled
            self._size -= 1
        if self._size < POOL_SIZE:
            self._size += 1
            try:
                raw = await asyncpg.connect(self._dsn, statement_cache_size=0)
                await _set_codecs(raw)
            except BaseException:
                self._size -= 1
                self._wake_waiter()
                raise
            return _Pooled(raw)
        waiter: asyncio.Future[_Pooled] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after the waiter was answered: hand on what it was given, a
            # connection or a freed slot, and stay cancelled.
            if waiter.done() and not waiter.cancelled():
                if waiter.exception() is None:
                    self._release(waiter.result(), reusable=True)
                else:
                    self._wake_waiter()
            raise

    def _release(self, pooled: _Pooled, *, reusable: bool) -> None:
        if not reusable or self._closed or pooled.raw.is_closed():
            self._size -= 1
            if not pooled.raw.is_closed():
                # Mid-operation (a cancelled statement) or in an unknown transaction state:
                # pooled again, it would fail the next request.
                pooled.raw.terminate()
            self._wake_waiter()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(pooled)
                return
        self._idle.append(pooled)

    def _wake_waiter(self) -> None:
        """A slot was freed: let the first waiter open a connection of its own."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_Retry())
                return

    def read(self) -> PooledBlock:
        """Statements in autocommit: each sees what was committed before it began."""
        return PooledBlock(self, transaction=False)

    def write(self) -> PooledBlock:
        """One transaction, committed when the block ends, rolled back if it raises."""
        return PooledBlock(self, transaction=True)

    def autocommit(self) -> PooledBlock:
        """Every statement commits by itself: for changes each correct on their own."""
        return PooledBlock(self, transaction=False)

    async def dispose(self) -> None:
        """Close the idle connections; those in use are closed when released."""
        self._closed = True
        while self._idle:
            pooled = self._idle.pop()
            self._size -= 1
            try:
                await pooled.raw.close(timeout=5)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                logger.info("Closing a PostgreSQL connection failed: %s", exc)
                pooled.raw.terminate()


class PooledBlock:
    """``async with`` a pooled connection, in a transaction or in autocommit; the
    connection goes back to the pool at the end, unless its state is unknown."""

    __slots__ = ("_driver", "_pooled", "_transaction", "_with_transaction")

    def __init__(self, driver: PostgresDriver, *, transaction: bool) -> None:
        self._driver = driver
        self._with_transaction = transaction
        self._pooled: _Pooled | None = None
        self._transaction: Any = None

    async def __aenter__(self) -> PostgresConnection:
        driver = self._driver
        while True:
            try:
                pooled = await driver._acquire()
                break
            except _Retry:
                continue
        try:
            if self._with_transaction:
                transaction = pooled.raw.transaction()
                await transaction.start()
                self._transaction = transaction
        except BaseException:
            driver._release(pooled, reusable=False)
            raise
        self._pooled = pooled
        return PostgresConnection(pooled, driver._statements)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        pooled = self._pooled
        assert pooled is not None
        raw = pooled.raw
        transaction = self._transaction
        reusable = False
        try:
            if exc_type is None:
                if transaction is not None:
                    await transaction.commit()
                reusable = not raw.is_in_transaction()
            elif isinstance(exc, Exception) and not is_connection_lost(exc):
                # A statement the database refused leaves the connection usable, and so
                # does an error of the caller's: roll back and pool it again.
                if transaction is not None:
                    await transaction.rollback()
                reusable = not raw.is_in_transaction()
            # A connection the server terminated may not know it yet (asyncpg reports the
            # server's message first, and would answer the next request "another operation
            # is in progress"): never reused, and no ROLLBACK sent on it. A cancellation
            # (BaseException) neither: the statement it interrupted may still be running,
            # so the connection is terminated, which rolls back.
        finally:
            self._driver._release(pooled, reusable=reusable)


class _Retry(Exception):
    """A waiter's turn to open a connection in a freed slot."""
