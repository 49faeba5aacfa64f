"""Rows to response bodies and events, in one place so both always agree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Row

from joblib_app.api.schemas import ClaimResponse, JobOut, ProviderOut, TaskOut
from joblib_app.models import TERMINAL_STATUSES, TaskStatus
from joblib_app.realtime.events import (
    Outbox,
    TaskStatusEvent,
    room_channel,
    task_notify_channel,
)


def task_out(row: Row, positions: Mapping[int, int]) -> TaskOut:
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


def task_json(row: Row, positions: Mapping[int, int]) -> bytes:
    """The ``TaskOut`` body of ``row``, serialised."""
    out = task_out(row, positions)
    return out.__pydantic_serializer__.to_json(out)


def claim_json(row: Row | None) -> bytes:
    """The ``ClaimResponse`` body: the claimed task, or ``{"task": null}``."""
    claimed = ClaimResponse(task=task_out(row, {}) if row is not None else None)
    return claimed.__pydantic_serializer__.to_json(claimed)


def record_task_change(outbox: Outbox, row: Row, positions: Mapping[int, int]) -> None:
    """Queue the status event for a changed task and wake its long-polls."""
    outbox.emit(
        TaskStatusEvent(
            id=row.id,
            name=row.job_name,
            room_id=row.room_id,
            status=row.status,
            created_at=row.created_at,
            started_at=row.started_at,
            completed_at=row.completed_at,
            queue_position=positions.get(row.seq),
            worker_id=row.worker_id,
            error=row.error,
            progress=row.progress,
            progress_message=row.progress_message,
            version=row.version,
        ),
        room_channel(row.room_id),
    )
    if TaskStatus(row.status) in TERMINAL_STATUSES:
        outbox.notify(task_notify_channel(row.id), row.status)


def job_out(row: Row, workers: Sequence[str]) -> JobOut:
    return JobOut(
        id=row.id,
        room_id=row.room_id,
        category=row.category,
        name=row.name,
        full_name=row.full_name,
        schema=row.schema,
        workers=list(workers),
    )


def provider_out(row: Row) -> ProviderOut:
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
