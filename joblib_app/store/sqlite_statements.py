"""SQLite's statements compiled once: bound by position and run on the pysqlite connection.

On a local SQLite file a lookup by key takes microseconds; SQLAlchemy's per-execution work
(execution context, cache key, result metadata) costs several times that. The statements
the store runs again and again are compiled here once and then run without it.
"""

from __future__ import annotations

import json
import sqlite3
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import JSON, CursorResult, Delete, Insert, Select, TupleType, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from joblib_app import models
from joblib_app.store.connection import FetchedResult, row_class

_FAST_STATEMENTS = (Select, Insert, Update, Delete)
_MISSING: Any = object()


def _attribute_row_class(keys: tuple[str, ...]) -> type[tuple[Any, ...]] | None:
    """A row class with ``keys`` as attributes; ``None`` if they cannot be attributes.

    ``None`` sends the statement to SQLAlchemy, whose ``Row`` handles any key.
    """
    try:
        return row_class(keys, rename=False)
    except ValueError:
        return None


class Plan:
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

    def run(self, raw: sqlite3.Connection, parameters: Mapping[str, Any] | None) -> FetchedResult:
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
            return FetchedResult(None, rowcount)
        if raw_rows is None or len(cursor.description) != len(self._keys):
            raise RuntimeError(f"statement returned other columns than compiled: {self.sql}")
        return FetchedResult(self._rows(raw_rows), rowcount)

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
        self.plans: dict[tuple[str, ...], Plan | None] = {}


class CompiledStatements:
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

    def plan(self, statement: Any, parameters: Any) -> Plan | None:
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
        found: Plan | None = plan
        return found

    def note(self, statement: Any, parameters: Any, result: CursorResult[Any]) -> None:
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
    ) -> Plan | None:
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
            return Plan(compiled, dialect, args, None, None, [])
        columns = list(statement.exported_columns)
        row_class = _attribute_row_class(keys)
        if row_class is None or len(columns) != len(keys):
            return None
        results = [
            (index, process)
            for index, column in enumerate(columns)
            if (process := _result_processor(column.type, dialect)) is not None
        ]
        return Plan(compiled, dialect, args, keys, row_class, results)


def _bind_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    # ``dialect_impl`` gives the type SQLAlchemy binds with on this dialect: a variant's
    # choice, or a TypeDecorator over the dialect's own impl, whose processor runs
    # ``process_bind_param`` and then the impl's.
    if isinstance(type_, models.UTCDateTime):
        return _utc_to_sqlite_text
    process: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return process


def _result_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    if isinstance(type_, models.UTCDateTime):
        return _sqlite_text_to_utc
    process: Callable[[Any], Any] | None = type_.dialect_impl(dialect).result_processor(
        dialect, None
    )
    if process is not None and isinstance(type_, JSON) and _uses_json_loads(dialect):
        # Every task row carries two JSON columns: their text goes to ``json.loads``
        # directly, anything else (SQLite may answer a number) to SQLAlchemy's processor.
        return partial(_json_text_or, process)
    return process


def _uses_json_loads(dialect: Dialect) -> bool:
    return getattr(dialect, "_json_deserializer", None) in (None, json.loads)


def _json_text_or(process: Callable[[Any], Any], value: Any) -> Any:
    return json.loads(value) if type(value) is str else process(value)


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
