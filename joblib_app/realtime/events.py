"""Server-to-client events and the outbox that emits them after commit.

An event's name is its model's class name in snake_case, as the contract says.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel


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


class Outbox:
    """Events and notifications collected during a transaction, sent after its commit.

    Identical events (same name, room and payload) are kept once.
    """

    def __init__(self) -> None:
        self._events: dict[tuple[str, str, Any], tuple[str, dict[str, Any], str]] = {}
        self._notifications: dict[str, str] = {}

    def emit(self, event: _Event, room: str) -> None:
        payload = event.model_dump(mode="json")
        name = event.event_name()
        try:
            identity: Any = tuple(payload.items())
            hash(identity)
        except TypeError:  # a nested value: compare by canonical JSON instead
            identity = json.dumps(payload, sort_keys=True)
        self._events.setdefault((name, room, identity), (name, payload, room))

    def notify(self, channel: str, message: str = "") -> None:
        self._notifications.setdefault(channel, message)

    @property
    def events(self) -> list[tuple[str, dict[str, Any], str]]:
        return list(self._events.values())

    @property
    def notifications(self) -> list[tuple[str, str]]:
        return list(self._notifications.items())

    def __bool__(self) -> bool:
        return bool(self._events or self._notifications)
