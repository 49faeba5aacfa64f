"""The client's copies of the shared vocabulary: rooms, names, statuses, ``Prefer: wait``.

The server keeps the same rules in its own modules. These copies live here, in ONE place,
so that switching the client to the shared vocabulary package is a change of imports in this
module only. A worker importing ``joblib_app.client`` must not load FastAPI or SQLAlchemy,
which is why the client never imports the server's modules.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

GLOBAL_ROOM = "@global"
"""The room of jobs and providers every room sees (registering there needs a superuser)."""


class TaskStatus(enum.StrEnum):
    """A task's status, as the server reports it (``joblib_app.models.TaskStatus``)."""

    PENDING = "pending"
    CLAIMED = "claimed"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
"""Task statuses after which nothing changes any more."""

PROBLEM_TYPE_PREFIX = "/v1/problems/"
"""What precedes the problem kind in a problem+json ``type``."""

WORKER_NOT_FOUND = "worker-not-found"
"""The problem kind the server answers for a worker it does not know (any more)."""

PROVIDER_ERROR = "provider-error"
"""The problem kind a provider uploads when its ``read`` raised (readers get a 502)."""


def full_name(room_id: str, category: str, name: str) -> str:
    """A job's or provider's full name, ``{room_id}:{category}:{name}``."""
    return f"{room_id}:{category}:{name}"


def is_terminal(status: str) -> bool:
    """Whether a task in ``status`` is finished for good."""
    return status in TERMINAL_STATUSES


def format_wait(seconds: float) -> str:
    """A wait for the ``Prefer`` header, as a whole number of seconds when it is one."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def prefer_wait(seconds: float | None) -> Mapping[str, str] | None:
    """The ``Prefer: wait=N`` header asking the server to long-poll, or None for no wait."""
    if not seconds or seconds <= 0:
        return None
    return {"Prefer": f"wait={format_wait(seconds)}"}
