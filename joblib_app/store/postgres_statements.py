"""SQLAlchemy Core statements compiled once for asyncpg: SQL with ``$n``, and how to bind.

SQLAlchemy compiles (the asyncpg dialect, with its casts), binds (each type's bind
processor) and converts results (each column's result processor); asyncpg runs the SQL as
a prepared statement of the connection (``postgres.PostgresConnection``). What is left out
is SQLAlchemy's per-execution machinery and its greenlet hop, which cost more than the
statement's round trip on the hot path.

A statement object seen before is found by ``id()`` (the hot path's statements are built
once at import); a new object by SQLAlchemy's own cache key, so that statements built per
call with other literal values share one compiled form, as in SQLAlchemy's cache.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import ClauseElement, Executable

from joblib_app.store.connection import row_class

Processor = Callable[[Any], Any]
# Compiled forms kept for statements built per call (distinct cache keys): the store
# builds a few dozen kinds; the bound keeps a host's ad-hoc statements from piling up.
_MAX_BY_KEY = 512


class PostgresPlan:
    """One statement compiled for one set of parameter names."""

    __slots__ = (
        "_columns",
        "_compiled",
        "_dialect",
        "_expanding",
        "_make_row",
        "_prefetch",
        "_processors",
        "_results",
        "keys",
        "rows_expected",
        "sql",
    )

    def __init__(self, statement: Any, compiled: Any, dialect: Dialect) -> None:
        self._compiled = compiled
        self._dialect = dialect
        self.sql: str = compiled.string
        self._expanding = bool(compiled.post_compile_params or compiled.literal_execute_params)
        self._processors: dict[str, Processor | None] = {
            name: bindparam.type.dialect_impl(dialect).bind_processor(dialect)
            for bindparam, name in compiled.bind_names.items()
        }
        self._prefetch = [
            (column.key, _client_default(column, compiled))
            for column in (*compiled.insert_prefetch, *compiled.update_prefetch)
        ]
        columns = list(getattr(statement, "exported_columns", ()))
        # An INSERT without RETURNING gets an implicit one on PostgreSQL (the generated
        # key); SQLAlchemy's result then still returns no rows, and neither does ours.
        self.rows_expected = bool(columns) or not getattr(statement, "is_dml", False)
        self.keys: tuple[str, ...] | None = None
        self._make_row: Callable[[Sequence[Any]], tuple[Any, ...]] | None = None
        self._columns = columns
        # Computed at the first execution: some processors depend on the type the database
        # reports for the column (its OID), as SQLAlchemy's do on the cursor's description.
        self._results: list[tuple[int, Processor]] | None = None
        if columns:
            self.keys = tuple(statement.exported_columns.keys())
            self._make_row = row_class(self.keys)._make  # type: ignore[attr-defined]

    def _result_processors(self, type_oids: Sequence[int]) -> list[tuple[int, Processor]]:
        dialect = self._dialect
        if len(type_oids) != len(self._columns):
            raise RuntimeError(f"statement returned other columns than compiled: {self.sql}")
        return [
            (index, process)
            for index, (column, oid) in enumerate(zip(self._columns, type_oids, strict=True))
            if (process := column.type.dialect_impl(dialect).result_processor(dialect, oid))
            is not None
        ]

    def bind(
        self, parameters: Mapping[str, Any] | None, extracted: Sequence[Any] | None
    ) -> tuple[str, list[Any]]:
        """The SQL to run and its positional arguments."""
        compiled = self._compiled
        values = compiled.construct_params(
            parameters or None,
            extracted_parameters=extracted,
            escape_names=False,
            _no_postcompile=True,
        )
        for key, default in self._prefetch:
            if key not in values or values[key] is None:
                values[key] = default
        if self._expanding:
            # IN lists and literal-execute values rendered for this call's values.
            state = compiled._process_parameters_for_postcompile(values)
            processors = state.processors
            return state.statement, [
                value if (process := processors.get(name)) is None else process(value)
                for name in state.positiontup
                for value in (state.parameters[name],)
            ]
        processors = self._processors
        return self.sql, [
            value if (process := processors.get(name)) is None else process(value)
            for name in compiled.positiontup
            for value in (values[name],)
        ]

    def rows(self, records: Sequence[Any], type_oids: Sequence[int]) -> list[Any]:
        """Result rows (attribute access) from asyncpg records, with result processing.

        ``type_oids``: the types of the result's columns, as the database reports them.
        """
        make = self._make_row
        if make is None:
            # A textual statement: its columns are known only from the database.
            if not records:
                return []
            make = row_class(tuple(records[0].keys()))._make  # type: ignore[attr-defined]
            return [make(tuple(record)) for record in records]
        results = self._results
        if results is None:
            results = self._results = self._result_processors(type_oids)
        if not results:
            return [make(tuple(record)) for record in records]
        rows = []
        for record in records:
            values = list(record)
            for index, process in results:
                values[index] = process(values[index])
            rows.append(make(values))
        return rows


def _client_default(column: Any, compiled: Any) -> Any:
    """The value of a column default computed in Python (only scalar ones exist here)."""
    default = column.default if column in compiled.insert_prefetch else column.onupdate
    if default is None or not default.is_scalar:
        raise NotImplementedError(
            f"column {column} has a default computed in Python, which the PostgreSQL "
            "driver does not run; give the value explicitly"
        )
    return default.arg


class _Entry:
    """A statement object seen before: its cache key, and its plans by parameter names."""

    __slots__ = ("cache_key", "extracted", "plans", "ref")

    def __init__(self, ref: weakref.ref[Any], cache_key: Any) -> None:
        self.ref = ref
        self.cache_key = cache_key
        # Its own bound values, given to a plan compiled from another object of its key.
        self.extracted: Sequence[Any] | None = None if cache_key is None else cache_key.bindparams
        self.plans: dict[tuple[str, ...], PostgresPlan] = {}


class PostgresStatements:
    """Plans of the statements run by one PostgreSQL driver (see the module docstring)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._by_id: dict[int, _Entry] = {}
        self._by_key: dict[tuple[Any, tuple[str, ...]], PostgresPlan] = {}

    def plan(
        self, statement: Executable, parameters: Mapping[str, Any] | None
    ) -> tuple[PostgresPlan, Sequence[Any] | None]:
        """The plan of ``statement`` for these parameter names, and its extracted values."""
        if not isinstance(statement, ClauseElement):
            raise TypeError(f"not a SQLAlchemy Core statement: {statement!r}")
        names = tuple(parameters) if parameters else ()
        entry = self._by_id.get(id(statement))
        if entry is None or entry.ref() is not statement:
            entry = self._remember(statement)
        plan = entry.plans.get(names)
        if plan is None:
            plan = entry.plans[names] = self._plan_by_key(statement, entry.cache_key, names)
        return plan, entry.extracted

    def _remember(self, statement: ClauseElement) -> _Entry:
        key = id(statement)
        entries = self._by_id

        def forget(ref: weakref.ref[Any]) -> None:
            entry = entries.get(key)
            if entry is not None and entry.ref is ref:
                del entries[key]

        cache_key = statement._generate_cache_key()
        entry = entries[key] = _Entry(weakref.ref(statement, forget), cache_key)
        return entry

    def _plan_by_key(
        self, statement: ClauseElement, cache_key: Any, names: tuple[str, ...]
    ) -> PostgresPlan:
        if cache_key is None:
            return self._compile(statement, None, names)
        by_key = self._by_key
        plan = by_key.get((cache_key.key, names))
        if plan is None:
            plan = self._compile(statement, cache_key, names)
            if len(by_key) >= _MAX_BY_KEY:
                del by_key[next(iter(by_key))]
            by_key[(cache_key.key, names)] = plan
        return plan

    def _compile(
        self, statement: ClauseElement, cache_key: Any, names: tuple[str, ...]
    ) -> PostgresPlan:
        # As ``Connection.execute`` compiles: the parameter names are the column keys of an
        # INSERT or UPDATE, and the cache key lets statements of the same key bind their
        # own values into this compiled form.
        dialect = self.dialect
        compiled = dialect.statement_compiler(
            dialect, statement, cache_key=cache_key, column_keys=list(names)
        )
        return PostgresPlan(statement, compiled, dialect)
