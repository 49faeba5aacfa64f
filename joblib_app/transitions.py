"""The task state machine."""

from __future__ import annotations

from joblib_app.models import TaskStatus
from joblib_app.problems import ProblemError

_S = TaskStatus
ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    _S.PENDING: frozenset({_S.CLAIMED, _S.CANCELLED}),
    _S.CLAIMED: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}


def check_transition(current: TaskStatus, target: TaskStatus) -> None:
    """Raise ``409 invalid-task-transition`` unless ``current -> target`` is allowed."""
    if target not in ALLOWED_TRANSITIONS[current]:
        raise ProblemError(
            409,
            "invalid-task-transition",
            f"Cannot move a task from {current.value} to {target.value}",
        )
