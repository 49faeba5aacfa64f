"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from joblib_app.domain.statuses import TaskStatus
from joblib_app.limits import BodyId, ContentType, ErrorText, Name

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

    category: Name
    name: Name
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    worker_id: BodyId | None = None
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
    # Additions to the reference's task (see the README's wire contract additions).
    result: Any = None
    progress: float | None = None
    progress_message: str | None = None
    version: int | None = None
    # Beyond the reference: which run this is, 1 for the first.
    attempt: int = 1


class ClaimRequest(BaseModel):
    worker_id: BodyId


class ClaimResponse(BaseModel):
    task: TaskOut | None


PROGRESS_MESSAGE_MAX = 500


class TaskUpdate(BaseModel):
    status: TaskStatus
    error: ErrorText = None
    # Additions: ``result`` with ``completed``; ``progress`` and its message with ``running``.
    result: Any = None
    progress: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    progress_message: str | None = Field(default=None, max_length=PROGRESS_MESSAGE_MAX)

    @model_validator(mode="after")
    def _reports_fit_status(self) -> TaskUpdate:
        if self.result is not None and self.status is not TaskStatus.COMPLETED:
            raise ValueError("result is only accepted with status 'completed'")
        has_progress = self.progress is not None or self.progress_message is not None
        if has_progress and self.status is not TaskStatus.RUNNING:
            raise ValueError("progress is only accepted with status 'running'")
        return self

    def reported(self) -> dict[str, Any]:
        """The reported fields that were given, by column name."""
        fields = {
            "result": self.result,
            "progress": self.progress,
            "progress_message": self.progress_message,
        }
        return {name: value for name, value in fields.items() if value is not None}


class ProviderRegister(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    category: Name
    name: Name
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    content_type: ContentType = "application/json"
    worker_id: BodyId | None = None


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
