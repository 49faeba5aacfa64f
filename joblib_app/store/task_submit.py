"""Submitting tasks: the one-statement submit to an active job, and the plain insert."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import JSON, bindparam, false, select

from joblib_app.models import UTCDateTime, job_table, task_table
from joblib_app.store.connection import Connection, Row
from joblib_app.store.task_columns import PENDING, TASK_COLUMNS, status_literal

_T = task_table.c
_PENDING = PENDING
_INSERT_TASK = task_table.insert().returning(*TASK_COLUMNS)


async def insert_task(
    conn: Connection,
    *,
    job_id: str,
    job_name: str,
    room_id: str,
    payload: dict[str, Any],
    created_by: str,
    now: datetime,
) -> Row:
    params = {
        "id": str(uuid.uuid4()),
        "job_id": job_id,
        "job_name": job_name,
        "room_id": room_id,
        "status": _PENDING,
        "created_by": created_by,
        "payload": payload,
        "created_at": now,
    }
    return (await conn.execute(_INSERT_TASK, params)).one()


# A task row built from what was inserted, with the columns of ``TASK_COLUMNS``.
class TaskRow(NamedTuple):
    """A task row with the columns of ``TASK_COLUMNS``, built without reading it back."""

    seq: int
    id: str
    job_id: str
    job_name: str
    room_id: str
    status: str
    worker_id: str | None
    error: str | None
    payload: Any
    created_by: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    result: Any
    progress: float | None
    progress_message: str | None
    version: int
    attempt: int

    @property
    def _mapping(self) -> dict[str, Any]:
        return self._asdict()

    if TYPE_CHECKING:
        # What makes it a ``connection.Row`` to type checkers; at run time a missing
        # attribute raises ``AttributeError`` as on any tuple.
        def __getattr__(self, name: str) -> Any: ...


if TaskRow._fields != tuple(c.key for c in TASK_COLUMNS):
    raise RuntimeError("TaskRow's fields must be TASK_COLUMNS, in order")


class SubmittedTaskRow(TaskRow):
    """A just-submitted task, with its queue position when the submit counted it."""

    queue_position: int | None = None


def submitted_position(row: Any) -> int | None:
    """The queue position counted by the submit that returned ``row``, if it did."""
    if type(row) is SubmittedTaskRow:
        return row.queue_position
    return None


_J = job_table.c
_SUBMIT = (
    task_table.insert()
    .from_select(
        ["id", "job_id", "job_name", "room_id", "status", "created_by", "payload", "created_at"],
        select(
            bindparam("id"),
            _J.id,
            _J.full_name,
            bindparam("room_id"),
            status_literal(_PENDING),
            bindparam("created_by"),
            bindparam("payload", type_=JSON),
            bindparam("created_at", type_=UTCDateTime),
        ).where(_J.full_name == bindparam("job_name"), _J.is_deleted == false()),
    )
    .returning(_T.seq, _T.job_id)
)


async def submit_to_active_job(
    conn: Connection,
    *,
    job_name: str,
    room_id: str,
    payload: dict[str, Any],
    created_by: str,
    now: datetime,
) -> SubmittedTaskRow | None:
    """Queue a task on the active job ``job_name`` in one statement; ``None`` if there is
    no such job (or it is deleted).

    The job lookup is the ``INSERT``'s own ``SELECT``, and only the generated ``seq`` comes
    back: the rest of the row is what was inserted. Where the driver can (PostgreSQL), the
    same statement counts the task's queue position, which :func:`submitted_position`
    then gives to ``tasks.queue_positions`` without another round trip.
    """
    task_id = str(uuid.uuid4())
    params = {
        "id": task_id,
        "room_id": room_id,
        "created_by": created_by,
        "payload": payload,
        "created_at": now,
        "job_name": job_name,
    }
    counting = conn.rules.counting_submit(_SUBMIT)
    inserted = (await conn.execute(_SUBMIT if counting is None else counting, params)).first()
    if inserted is None:
        return None
    row = SubmittedTaskRow(
        seq=inserted.seq,
        id=task_id,
        job_id=inserted.job_id,
        job_name=job_name,
        room_id=room_id,
        status=_PENDING,
        worker_id=None,
        error=None,
        payload=payload,
        created_by=created_by,
        created_at=now,
        started_at=None,
        completed_at=None,
        result=None,
        progress=None,
        progress_message=None,
        version=1,
        attempt=1,
    )
    if counting is not None:
        row.queue_position = inserted.position
    return row
