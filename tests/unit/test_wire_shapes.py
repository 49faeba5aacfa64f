"""The hot paths write the task and its event without pydantic models; the bytes and
payloads must be exactly what the models (the documented shapes) give."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from joblib_app.api.schemas import ClaimResponse, TaskOut
from joblib_app.api.views import claim_json, task_json
from joblib_app.domain.statuses import TaskStatus
from joblib_app.realtime.events import (
    TASK_STATUS_EVENT,
    Outbox,
    TaskStatusEvent,
    task_status_payload,
)
from joblib_app.store.task_submit import TaskRow

_CREATED = datetime(2026, 12, 7, 3, 17, 42, 123456, tzinfo=UTC)


def _row(**changes: Any) -> TaskRow:
    values: dict[str, Any] = {
        "seq": 7,
        "id": "0b7c3f0e-6a55-4f43-9d0e-6f6a1d2c9e11",
        "job_id": "3c6f7a64-2e0f-4d4b-8f3e-7c1e2a9b5d10",
        "job_name": "room-1:modifiers:scale",
        "room_id": "room-1",
        "status": "pending",
        "worker_id": None,
        "error": None,
        "payload": {"x": 1, "nested": {"list": [1.5, "é", None, True]}},
        "created_by": "alice",
        "created_at": _CREATED,
        "started_at": None,
        "completed_at": None,
        "result": None,
        "progress": None,
        "progress_message": None,
        "version": 1,
        "attempt": 1,
    }
    values.update(changes)
    return TaskRow(**values)


ROWS = [
    _row(),
    _row(
        status="running",
        worker_id="w-1",
        started_at=_CREATED.replace(microsecond=0) + timedelta(seconds=1),
        progress=0.25,
        progress_message="a quarter",
        version=3,
        attempt=2,
    ),
    _row(
        status="completed",
        worker_id="w-1",
        started_at=_CREATED + timedelta(seconds=1),
        completed_at=_CREATED + timedelta(seconds=2, microseconds=1),
        result={"values": [6.1e-17, 1.0, -0.0, 1e300], "ok": True},
        version=4,
    ),
    _row(
        status="failed",
        error='Worker said "no"\n\u2028',
        completed_at=datetime(2026, 12, 7, 4, 0, tzinfo=timezone(timedelta(hours=2))),
        result=[1, "two", None],
        version=5,
    ),
    _row(result="a plain string", status="completed", payload={}),
]


def _task_out(row: TaskRow, position: int | None) -> TaskOut:
    skip = ("status", "queue_position")
    fields = {name: getattr(row, name) for name in TaskOut.model_fields if name not in skip}
    return TaskOut(**{**fields, "queue_position": position}, status=TaskStatus(row.status))


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("position", [None, 1, 40])
def test_task_json_is_the_bytes_task_out_gives(row: TaskRow, position: int | None) -> None:
    positions = {} if position is None else {row.seq: position}
    assert task_json(row, positions) == _task_out(row, position).model_dump_json().encode()


@pytest.mark.parametrize("row", [*ROWS, None])
def test_claim_json_is_the_bytes_claim_response_gives(row: TaskRow | None) -> None:
    expected = ClaimResponse(task=None if row is None else _task_out(row, None))
    assert claim_json(row) == expected.model_dump_json().encode()


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("position", [None, 3])
def test_status_event_payload_is_the_models(row: TaskRow, position: int | None) -> None:
    model = TaskStatusEvent(
        id=row.id,
        name=row.job_name,
        room_id=row.room_id,
        status=row.status,
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        queue_position=position,
        worker_id=row.worker_id,
        error=row.error,
        progress=row.progress,
        progress_message=row.progress_message,
        version=row.version,
    )
    payload = task_status_payload(row, position)
    assert payload == model.model_dump(mode="json")
    # The same JSON text on the wire, key order included.
    assert json.dumps(payload) == json.dumps(model.model_dump(mode="json"))


def test_outbox_keeps_one_event_per_task_version_and_builds_payloads_on_demand() -> None:
    outbox = Outbox()
    first, again, later = ROWS[0], ROWS[0], _row(version=2, status="claimed")
    for row in (first, again, later):
        outbox.task_changed(row, None)
    events = outbox.events
    assert [(e.name, e.room, e.order_key) for e in events] == [
        (TASK_STATUS_EVENT, "room:room-1", (first.id, 1)),
        (TASK_STATUS_EVENT, "room:room-1", (first.id, 2)),
    ]
    assert [change.row.version for change in outbox.task_changes] == [1, 2]
    assert events[1].payload["status"] == "claimed"
    assert events[1].payload is events[1].payload  # built once
