"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from joblib_app.models import TaskStatus

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class WorkerOut(BaseModel):
    id: str
    last_heartbeat: datetime


class WorkerSummary(WorkerOut):
    job_count: int


class JobRegister(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    category: str
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^:]+$")
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    worker_id: str | None = None
    # Beyond the reference (optional): runs allowed when a worker is lost or a run times
    # out, and the longest a run may take. Omitted: the job keeps what it has (1, none).
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    timeout_seconds: float | None = Field(default=None, gt=0, le=7 * 86400)


class JobSummary(BaseModel):
    full_name: str
    category: str
    name: str
    workers: list[str]


class JobOut(JobSummary):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    room_id: str
    schema_: dict[str, Any] = Field(alias="schema")


class JobRegistered(JobOut):
    worker_id: str | None


class TaskSubmit(BaseModel):
    payload: dict[str, Any] = Field(default_factory=dict)


class TaskOut(BaseModel):
    id: str
    job_name: str
    room_id: str
    status: TaskStatus
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker_id: str | None
    error: str | None
    payload: dict[str, Any]
    queue_position: int | None
    # Beyond the reference: which run this is, 1 for the first.
    attempt: int = 1


class ClaimRequest(BaseModel):
    worker_id: str


class ClaimResponse(BaseModel):
    task: TaskOut | None


class TaskUpdate(BaseModel):
    status: TaskStatus
    error: str | None = None


class ProviderRegister(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    category: str = Field(min_length=1, max_length=255, pattern=r"^[^:]+$")
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^:]+$")
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    content_type: str = "application/json"
    worker_id: str | None = None


class ProviderOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    room_id: str
    category: str
    name: str
    full_name: str
    schema_: dict[str, Any] = Field(alias="schema")
    content_type: str
    worker_id: str
    created_at: datetime
