"""The package's own tables, prefixed ``joblib_``, with owner ids as plain values.

Rows are read and written with SQLAlchemy Core through the ``store`` layer; the SQLModel
classes define the schema once for both SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every dialect (SQLite hands back naive ones otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (auto-increment).
SequenceInt = BigInteger().with_variant(Integer(), "sqlite")


class Worker(SQLModel, table=True):
    __tablename__ = "joblib_worker"

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    user_id: str = Field(sa_column=Column(String(255), nullable=False, index=True))
    last_heartbeat: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class Job(SQLModel, table=True):
    __tablename__ = "joblib_job"
    __table_args__ = (Index("ix_joblib_job_room_created", "room_id", "is_deleted", "seq"),)

    seq: int | None = Field(
        default=None, sa_column=Column(SequenceInt, primary_key=True, autoincrement=True)
    )
    id: str = Field(sa_column=Column(String(36), nullable=False, unique=True))
    room_id: str = Field(sa_column=Column(String(255), nullable=False))
    category: str = Field(sa_column=Column(String(255), nullable=False))
    name: str = Field(sa_column=Column(String(255), nullable=False))
    full_name: str = Field(sa_column=Column(String(800), nullable=False, unique=True))
    schema_: dict[str, Any] = Field(sa_column=Column("schema", JSON, nullable=False))
    is_deleted: bool = Field(default=False, nullable=False)
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    # How many times a task may run when its worker is lost or it times out; how long a run
    # may take (``None``: no limit).
    max_attempts: int = Field(
        default=1, sa_column=Column(Integer, nullable=False, server_default=text("1"))
    )
    timeout_seconds: float | None = Field(default=None, sa_column=Column(Float, nullable=True))


class WorkerJobLink(SQLModel, table=True):
    __tablename__ = "joblib_worker_job"
    __table_args__ = (Index("ix_joblib_worker_job_job", "job_id"),)

    worker_id: str = Field(sa_column=Column(String(36), primary_key=True))
    job_id: str = Field(sa_column=Column(String(36), primary_key=True))


class Task(SQLModel, table=True):
    __tablename__ = "joblib_task"
    __table_args__ = (
        # Claim and queue position: only pending rows, ordered by arrival, per job.
        Index(
            "ix_joblib_task_pending",
            "job_id",
            "seq",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_joblib_task_room", "room_id", "seq"),
        Index("ix_joblib_task_job_room", "job_id", "room_id", "seq"),
        Index(
            "ix_joblib_task_active_worker",
            "worker_id",
            sqlite_where=text("status IN ('claimed', 'running')"),
            postgresql_where=text("status IN ('claimed', 'running')"),
        ),
        Index(
            "ix_joblib_task_active_internal",
            "room_id",
            "status",
            sqlite_where=text("status IN ('claimed', 'running')"),
            postgresql_where=text("status IN ('claimed', 'running')"),
        ),
        # Retention: the oldest finished tasks first.
        Index(
            "ix_joblib_task_finished",
            "completed_at",
            sqlite_where=text("status IN ('cancelled', 'completed', 'failed')"),
            postgresql_where=text("status IN ('cancelled', 'completed', 'failed')"),
        ),
    )

    seq: int | None = Field(
        default=None, sa_column=Column(SequenceInt, primary_key=True, autoincrement=True)
    )
    id: str = Field(sa_column=Column(String(36), nullable=False, unique=True))
    job_id: str = Field(sa_column=Column(String(36), nullable=False))
    job_name: str = Field(sa_column=Column(String(800), nullable=False))
    room_id: str = Field(sa_column=Column(String(255), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_by: str = Field(sa_column=Column(String(255), nullable=False))
    worker_id: str | None = Field(default=None, sa_column=Column(String(36), nullable=True))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    completed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # What the worker reported: the result on completion, progress while running.
    result: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=True))
    progress: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    progress_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Grows by one with every change of the row (1 at submit): orders the task's events.
    version: int = Field(
        default=1, sa_column=Column(Integer, nullable=False, server_default=text("1"))
    )
    # When the current claim was taken: a claim not started within the lease is undone.
    claimed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Which run this is (1 for the first); grows when a run is lost and the task requeued.
    attempt: int = Field(
        default=1, sa_column=Column(Integer, nullable=False, server_default=text("1"))
    )


class ProviderRow(SQLModel, table=True):
    __tablename__ = "joblib_provider"
    __table_args__ = (Index("ix_joblib_provider_room", "room_id", "seq"),)

    seq: int | None = Field(
        default=None, sa_column=Column(SequenceInt, primary_key=True, autoincrement=True)
    )
    id: str = Field(sa_column=Column(String(36), nullable=False, unique=True))
    room_id: str = Field(sa_column=Column(String(255), nullable=False))
    category: str = Field(sa_column=Column(String(255), nullable=False))
    name: str = Field(sa_column=Column(String(255), nullable=False))
    full_name: str = Field(sa_column=Column(String(800), nullable=False, unique=True))
    schema_: dict[str, Any] = Field(sa_column=Column("schema", JSON, nullable=False))
    content_type: str = Field(sa_column=Column(String(255), nullable=False))
    user_id: str = Field(sa_column=Column(String(255), nullable=False))
    worker_id: str = Field(sa_column=Column(String(36), nullable=False, index=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


# Looked up in the metadata: SQLModel's classes do not declare ``__table__`` to type checkers.
worker_table: Table = SQLModel.metadata.tables["joblib_worker"]
job_table: Table = SQLModel.metadata.tables["joblib_job"]
link_table: Table = SQLModel.metadata.tables["joblib_worker_job"]
task_table: Table = SQLModel.metadata.tables["joblib_task"]
provider_table: Table = SQLModel.metadata.tables["joblib_provider"]
