"""The connection contract the store's functions are written against.

Every driver (``store/sqlite.py``, ``store/postgres.py``, ``store/engine.py``) hands out
connections with this shape: ``execute`` runs a SQLAlchemy Core statement (built once, at
import, for the hot path) and gives back a :class:`Result`; ``rules`` answers the few
questions whose SQL differs between databases. Rows support what callers use:
``row.status``, ``row[0]``, iteration and ``row._mapping``.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Insert, Select, Table, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import MultipleResultsFound, NoResultFound, ResourceClosedError
from sqlalchemy.sql.expression import Executable


class Row(Protocol):
    """A result row: columns by name as attributes, by position, and as a mapping."""

    def __getattr__(self, name: str) -> Any: ...

    def __getitem__(self, index: int) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    @property
    def _mapping(self) -> Mapping[Any, Any]: ...


class ScalarResult(Protocol):
    """The first column of each row of a :class:`Result`."""

    def __iter__(self) -> Iterator[Any]: ...

    def all(self) -> Sequence[Any]: ...

    def first(self) -> Any: ...

    def one(self) -> Any: ...


class Result(Protocol):
    """What a statement gives back: the part of SQLAlchemy's ``Result`` the store uses.

    ``first()``, ``one()``, ``one_or_none()`` and the scalar forms consume the result;
    ``all()`` and iteration take the rows not taken yet.
    """

    @property
    def rowcount(self) -> int: ...

    def __iter__(self) -> Iterator[Row]: ...

    def all(self) -> Sequence[Row]: ...

    def first(self) -> Row | None: ...

    def one(self) -> Row: ...

    def one_or_none(self) -> Row | None: ...

    def scalar(self) -> Any: ...

    def scalar_one(self) -> Any: ...

    def scalars(self) -> ScalarResult: ...


class DialectRules(Protocol):
    """The statements whose SQL differs between databases; one implementation per driver."""

    name: str
    # Whether row locks (``FOR UPDATE``) exist and are needed: SQLite has one writer at a
    # time and no such clause.
    takes_row_locks: bool

    def claim_statement(self, *, owner_checked: bool) -> Update:
        """The one-statement claim of the oldest pending task of a worker's jobs.

        Parameters: ``worker_id``, ``now`` and (``owner_checked``) ``owner_id``; returns
        the claimed task's ``TASK_COLUMNS``.
        """
        ...

    def counting_submit(self, submit: Insert) -> Executable | None:
        """``submit`` (an ``INSERT ... RETURNING seq, job_id``) that also returns the new
        task's queue ``position``, in one statement; ``None`` where that is not possible."""
        ...

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        """``INSERT`` that does nothing when a unique key already exists."""
        ...

    def for_update(self, statement: Select[Any]) -> Select[Any]:
        """``statement`` holding row locks until the transaction ends, where needed."""
        ...

    async def serialize_across_processes(self, conn: Connection, name: str) -> None:
        """Hold a lock named ``name`` until ``conn``'s transaction ends, across processes."""
        ...


class Connection(Protocol):
    """A database connection as the store uses it (see the module docstring)."""

    @property
    def dialect(self) -> Dialect:
        """The SQLAlchemy dialect its statements are compiled for."""
        ...

    @property
    def rules(self) -> DialectRules:
        """The dialect differences of this connection's database."""
        ...

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Result:
        """Run one statement with named ``parameters``; all its rows are fetched at once."""
        ...


class FetchedResult:
    """A :class:`Result` over rows fetched when the statement ran.

    The same exceptions as SQLAlchemy's results, so callers see one behaviour. The drivers
    that bypass SQLAlchemy's execution (the compiled SQLite path, asyncpg)
    fetch every row at once: the store's queries return few rows, and a statement left
    half-read would hold its snapshot on a connection that serves the next statement.
    ``rows`` is ``None`` for a statement that returns no rows.
    """

    __slots__ = ("_pos", "_rows", "rowcount")

    def __init__(self, rows: list[Any] | None, rowcount: int) -> None:
        self._rows = rows
        self._pos = 0
        self.rowcount = rowcount

    def _open_rows(self) -> list[Any]:
        if self._rows is None:
            raise ResourceClosedError("This result does not return rows, or it is closed")
        return self._rows

    def _take_rest(self) -> list[Any]:
        rows = self._open_rows()
        rest = rows[self._pos :] if self._pos else rows
        self._pos = len(rows)
        return rest

    def _close(self) -> None:
        self._rows = None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._take_rest())

    def all(self) -> list[Any]:
        return self._take_rest()

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

    def scalars(self) -> FetchedScalars:
        return FetchedScalars(self)


class FetchedScalars:
    """:class:`ScalarResult` of a :class:`FetchedResult`."""

    __slots__ = ("_result",)

    def __init__(self, result: FetchedResult) -> None:
        self._result = result

    def __iter__(self) -> Iterator[Any]:
        return (row[0] for row in self._result._take_rest())

    def all(self) -> list[Any]:
        return [row[0] for row in self._result._take_rest()]

    def first(self) -> Any:
        return self._result.scalar()

    def one(self) -> Any:
        return self._result.scalar_one()


class _FetchedRow(tuple[Any, ...]):
    """Base of the rows of :class:`FetchedResult`: the parts of SQLAlchemy's ``Row`` used."""

    __slots__ = ()
    _fields: tuple[str, ...]

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


def row_class(keys: Sequence[str], *, rename: bool = True) -> type[tuple[Any, ...]]:
    """A named-tuple row class with ``keys`` as attributes.

    With ``rename``, keys that cannot be attributes (duplicates, keywords, odd labels)
    become ``_0``, ``_1``...: such columns are still there by position. Without it they
    raise ``ValueError``.
    """
    if rename:
        base = namedtuple("Row", keys, rename=True)  # type: ignore[misc]
    else:
        base = namedtuple("Row", keys)  # type: ignore[misc,no-redef]
    return type("Row", (base, _FetchedRow), {"__slots__": ()})
