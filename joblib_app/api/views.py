"""Rows to response bodies: the API shapes what the services return."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_core import to_json

from joblib_app.api.schemas import JobOut, ProviderOut, TaskOut
from joblib_app.services.rows import Record


def task_out(row: Record, positions: Mapping[int, int]) -> TaskOut:
    """The ``TaskOut`` of a task row, with its queue position if pending."""
    return TaskOut.model_validate(_task_fields(row, positions.get(row.seq)))


def _task_fields(row: Record, queue_position: int | None) -> dict[str, Any]:
    """``TaskOut``'s fields in its order, from a row the store answered (already valid:
    the task routes answer on every request, and validating here again costs more than
    serialising)."""
    return {
        "id": row.id,
        "job_name": row.job_name,
        "room_id": row.room_id,
        "status": row.status,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "worker_id": row.worker_id,
        "error": row.error,
        "payload": row.payload,
        "queue_position": queue_position,
        "result": row.result,
        "progress": row.progress,
        "progress_message": row.progress_message,
        "version": row.version,
        "attempt": row.attempt,
    }


def task_json(row: Record, positions: Mapping[int, int]) -> bytes:
    """The ``TaskOut`` body of ``row``, serialised (the bytes ``TaskOut`` would give)."""
    return to_json(_task_fields(row, positions.get(row.seq)))


def claim_json(row: Record | None) -> bytes:
    """The ``ClaimResponse`` body: the claimed task, or ``{"task": null}``."""
    return to_json({"task": None if row is None else _task_fields(row, None)})


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
