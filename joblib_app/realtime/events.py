"""Server-to-client events and the outbox that emits them after commit.

An event's name is its model's class name in snake_case, as the contract says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

if TYPE_CHECKING:
    from joblib_app.store.connection import Row


class _Event(BaseModel):
    _name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

    @classmethod
    def event_name(cls) -> str:
        return cls._name


class TaskStatusEvent(_Event):
    id: str
    name: str
    room_id: str
    status: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    queue_position: int | None
    worker_id: str | None
    error: str | None
    # Additions to the reference's payload (optional for its clients). ``version`` grows
    # by one with each change of the task; a client drops an event older than one it saw.
    progress: float | None = None
    progress_message: str | None = None
    version: int | None = None


class TaskCancelRequested(_Event):
    """To the claiming worker's connection only: stop running this task."""

    task_id: str
    job_name: str
    room_id: str


class TaskAvailable(_Event):
    job_name: str
    room_id: str
    task_id: str


class JobsInvalidate(_Event):
    pass


class ProvidersInvalidate(_Event):
    pass


class ProviderRequest(_Event):
    request_id: str
    provider_name: str
    params: str


class ProviderResultReady(_Event):
    provider_name: str
    request_hash: str


def _json_value(value: datetime | None) -> Any:
    return None if value is None else to_jsonable_python(value)


def room_channel(room_id: str) -> str:
    return f"room:{room_id}"


def jobs_channel(job_full_name: str) -> str:
    return f"jobs:{job_full_name}"


def providers_channel(provider_full_name: str) -> str:
    return f"providers:{provider_full_name}"


def worker_channel(worker_id: str) -> str:
    """The Socket.IO room of one worker's own connection (never joined by clients)."""
    return f"worker:{worker_id}"


def task_notify_channel(task_id: str) -> str:
    """Notifier channel that wakes long-polls of one task."""
    return f"task:{task_id}"


def job_notify_channel(job_full_name: str) -> str:
    """Notifier channel that wakes claim long-polls of one job's workers."""
    return f"job:{job_full_name}"


class OutboxEvent:
    """One event of an outbox: its name, room, and payload, built on first use.

    Most events reach nobody (no client follows the room); their payload is then never
    built. ``order_key`` is the task and version of a ``task_status_event``, else ``None``.
    """

    __slots__ = ("_build", "_payload", "name", "order_key", "room")

    def __init__(
        self,
        name: str,
        room: str,
        build: Callable[[], dict[str, Any]],
        order_key: tuple[str, int] | None = None,
    ) -> None:
        self.name = name
        self.room = room
        self._build: Callable[[], dict[str, Any]] | None = build
        self._payload: dict[str, Any] | None = None
        self.order_key = order_key

    @property
    def payload(self) -> dict[str, Any]:
        """The JSON-ready payload, as sent to Socket.IO clients."""
        if self._build is not None:
            self._payload = self._build()
            self._build = None
        assert self._payload is not None
        return self._payload


class TaskChange(NamedTuple):
    """A committed change of a task: its row and, if pending, its queue position."""

    row: Row
    queue_position: int | None


TASK_STATUS_EVENT: str = TaskStatusEvent.event_name()


def task_status_payload(row: Row, queue_position: int | None) -> dict[str, Any]:
    """The ``task_status_event`` payload of a task row, as :class:`TaskStatusEvent`'s
    JSON (pydantic's own encoding of the timestamps)."""
    return {
        "id": row.id,
        "name": row.job_name,
        "room_id": row.room_id,
        "status": row.status,
        "created_at": _json_value(row.created_at),
        "started_at": _json_value(row.started_at),
        "completed_at": _json_value(row.completed_at),
        "queue_position": queue_position,
        "worker_id": row.worker_id,
        "error": row.error,
        "progress": row.progress,
        "progress_message": row.progress_message,
        "version": row.version,
    }


class Outbox:
    """Events and notifications collected during a transaction, sent after its commit.

    Identical events (same name, room and payload) are kept once; so are the changes of a
    task at one version.
    """

    def __init__(self) -> None:
        self._events: dict[tuple[str, str, Any], OutboxEvent] = {}
        self._task_changes: dict[tuple[str, int], TaskChange] = {}
        self._notifications: dict[str, str] = {}

    def emit(self, event: _Event, room: str) -> None:
        """Queue ``event`` for the Socket.IO room ``room``."""
        name = event.event_name()
        try:
            identity: Any = tuple(event.__dict__.items())
            hash(identity)
        except TypeError:  # a nested value: compare by canonical JSON instead
            identity = event.model_dump_json()
        key = (name, room, identity)
        if key not in self._events:
            build = partial(event.model_dump, mode="json")
            self._events[key] = OutboxEvent(name, room, build)

    def task_changed(self, row: Row, queue_position: int | None) -> None:
        """Queue the ``task_status_event`` of a changed task (for its room)."""
        key = (row.id, row.version)
        if key in self._task_changes:
            return
        self._task_changes[key] = TaskChange(row, queue_position)
        room = room_channel(row.room_id)
        build = partial(task_status_payload, row, queue_position)
        self._events[(TASK_STATUS_EVENT, room, key)] = OutboxEvent(
            TASK_STATUS_EVENT, room, build, order_key=key
        )

    def notify(self, channel: str, message: str = "") -> None:
        self._notifications.setdefault(channel, message)

    @property
    def events(self) -> list[OutboxEvent]:
        """The events in the order they were queued (each builds its payload on use)."""
        return list(self._events.values())

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    @property
    def task_changes(self) -> list[TaskChange]:
        return list(self._task_changes.values())

    @property
    def notifications(self) -> list[tuple[str, str]]:
        return list(self._notifications.items())

    def __bool__(self) -> bool:
        return bool(self._events or self._notifications)
