"""Task statuses and the transition table: the task state machine."""

from __future__ import annotations

import enum

from joblib_app.domain.errors import InvalidTransition


class TaskStatus(enum.StrEnum):
    """Where a task is in its life; the values are the wire's."""

    PENDING = "pending"
    CLAIMED = "claimed"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_S = TaskStatus
TERMINAL_STATUSES = frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED})
_ALL_STATUSES = frozenset(TaskStatus)
# Held by a worker: what a lost worker or a timeout takes back.
ACTIVE = frozenset({_S.CLAIMED, _S.RUNNING})
# The same as plain strings, in a fixed order (SQL ``IN`` lists).
ACTIVE_STATUSES = (_S.CLAIMED.value, _S.RUNNING.value)

ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    _S.PENDING: frozenset({_S.CLAIMED, _S.CANCELLED}),
    _S.CLAIMED: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}
# The targets that take a task out of pending.
LEAVES_PENDING = ALLOWED_TRANSITIONS[_S.PENDING]


def is_terminal(status: str | TaskStatus) -> bool:
    """Whether a task in ``status`` is finished for good (``ValueError`` if no status)."""
    if status in TERMINAL_STATUSES:
        return True
    if status in _ALL_STATUSES:
        return False
    return TaskStatus(status) in TERMINAL_STATUSES  # raises ValueError


def may_transition(current: TaskStatus, target: TaskStatus) -> bool:
    """Whether the table allows ``current -> target``."""
    return target in ALLOWED_TRANSITIONS[current]


def check_transition(current: TaskStatus, target: TaskStatus) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> target`` is allowed."""
    if not may_transition(current, target):
        raise InvalidTransition(current.value, target.value)
