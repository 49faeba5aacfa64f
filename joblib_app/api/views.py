"""Rows to response bodies: the API shapes what the services return."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from joblib_app.api.schemas import ClaimResponse, JobOut, ProviderOut, TaskOut
from joblib_app.domain.statuses import TaskStatus
from joblib_app.services.rows import Record


def task_out(row: Record, positions: Mapping[int, int]) -> TaskOut:
    """The ``TaskOut`` of a task row, with its queue position if pending."""
    return TaskOut(
        id=row.id,
        job_name=row.job_name,
        room_id=row.room_id,
        status=TaskStatus(row.status),
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        worker_id=row.worker_id,
        error=row.error,
        payload=row.payload,
        queue_position=positions.get(row.seq),
        result=row.result,
        progress=row.progress,
        progress_message=row.progress_message,
        version=row.version,
        attempt=row.attempt,
    )


def task_json(row: Record, positions: Mapping[int, int]) -> bytes:
    """The ``TaskOut`` body of ``row``, serialised."""
    out = task_out(row, positions)
    return out.__pydantic_serializer__.to_json(out)


def claim_json(row: Record | None) -> bytes:
    """The ``ClaimResponse`` body: the claimed task, or ``{"task": null}``."""
    claimed = ClaimResponse(task=task_out(row, {}) if row is not None else None)
    return claimed.__pydantic_serializer__.to_json(claimed)


def job_out(row: Record, workers: Sequence[str]) -> JobOut:
    """The ``JobOut`` of a job row and its workers' ids."""
    return JobOut(
        id=row.id,
        room_id=row.room_id,
        category=row.category,
        name=row.name,
        full_name=row.full_name,
        schema=row.schema,
        workers=list(workers),
    )


def provider_out(row: Record) -> ProviderOut:
    """The ``ProviderOut`` of a provider row."""
    return ProviderOut(
        id=row.id,
        room_id=row.room_id,
        category=row.category,
        name=row.name,
        full_name=row.full_name,
        schema=row.schema,
        content_type=row.content_type,
        worker_id=row.worker_id,
        created_at=row.created_at,
    )
