"""The transition table, without I/O."""

from __future__ import annotations

import pytest

from joblib_app.domain.errors import InvalidTransition, ProblemError
from joblib_app.domain.statuses import (
    ALLOWED_TRANSITIONS,
    LEAVES_PENDING,
    TERMINAL_STATUSES,
    TaskStatus,
    check_transition,
    is_terminal,
    may_transition,
)

S = TaskStatus


def test_every_status_has_a_row() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(TaskStatus)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PENDING, S.CLAIMED),
        (S.PENDING, S.CANCELLED),
        (S.CLAIMED, S.RUNNING),
        (S.CLAIMED, S.FAILED),
        (S.CLAIMED, S.CANCELLED),
        (S.RUNNING, S.COMPLETED),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.CANCELLED),
    ],
)
def test_allowed_moves(current: TaskStatus, target: TaskStatus) -> None:
    assert may_transition(current, target)
    check_transition(current, target)


def test_every_other_move_is_invalid_transition() -> None:
    allowed = {(c, t) for c, targets in ALLOWED_TRANSITIONS.items() for t in targets}
    refused = [(c, t) for c in S for t in S if (c, t) not in allowed]
    # Same status included: the services answer that case themselves (no change).
    assert (S.RUNNING, S.RUNNING) in refused
    for current, target in refused:
        with pytest.raises(InvalidTransition) as caught:
            check_transition(current, target)
        assert caught.value.status == 409
        assert caught.value.kind == "invalid-task-transition"
        assert caught.value.detail == f"Cannot move a task from {current} to {target}"


def test_terminal_statuses_lead_nowhere() -> None:
    assert {s for s in S if not ALLOWED_TRANSITIONS[s]} == TERMINAL_STATUSES
    assert all(is_terminal(s.value) for s in TERMINAL_STATUSES)
    assert not is_terminal("running")


def test_leaving_pending() -> None:
    assert LEAVES_PENDING == {S.CLAIMED, S.CANCELLED}


def test_invalid_transition_is_a_problem() -> None:
    assert issubclass(InvalidTransition, ProblemError)
