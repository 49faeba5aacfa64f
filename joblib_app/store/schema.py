"""The package's tables: created when absent, brought up to date when an earlier release made them.

Every change of the schema so far adds: a column that may be null or has a server default,
or an index. So a database of an earlier release is upgraded in place at start-up by adding
what is missing (``ALTER TABLE ... ADD COLUMN``, ``CREATE INDEX``), in the transaction that
creates absent tables. Nothing is dropped or altered: a column the models no longer have is
left as it is. A missing column that could not be added safely (``NOT NULL`` without a
default) stops the start-up with :class:`SchemaOutdated` rather than let requests fail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection, Table, inspect
from sqlalchemy.schema import CreateColumn
from sqlmodel import SQLModel

logger = logging.getLogger(__name__)


class SchemaOutdated(RuntimeError):
    """A table of an earlier release lacks a column that cannot be added in place."""


def create_or_upgrade(connection: Connection, tables: Sequence[Table]) -> list[str]:
    """Create absent ``tables``; add the columns and indexes existing ones lack.

    Runs in the caller's transaction (one writer at a time: the caller serialises processes).
    Returns what was added, as ``table.column`` and ``index name`` entries, and logs it once.
    """
    existing = set(inspect(connection).get_table_names())
    SQLModel.metadata.create_all(connection, tables=list(tables))
    # A fresh inspector: the first one caches what it read before the tables were created.
    inspector = inspect(connection)
    added: list[str] = []
    for table in tables:
        if table.name not in existing:
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                raise SchemaOutdated(
                    f"{table.name}.{column.name} is missing and cannot be added in place "
                    "(NOT NULL without a default): migrate this table by hand"
                )
            spec = CreateColumn(column).compile(dialect=connection.dialect)
            name = connection.dialect.identifier_preparer.format_table(table)
            connection.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {spec}")
            added.append(f"{table.name}.{column.name}")
        indexed = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda index: str(index.name)):
            if index.name not in indexed:
                index.create(connection)
                added.append(f"index {index.name}")
    if added:
        logger.warning("Upgraded the schema of an earlier release: added %s", ", ".join(added))
    return added
