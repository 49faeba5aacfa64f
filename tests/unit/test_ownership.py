"""The one ownership rule, without I/O."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from joblib_app.domain.errors import Forbidden
from joblib_app.domain.statuses import TaskStatus
from joblib_app.principal import Principal
from joblib_app.services.access import is_owner, may_update_task, require_owner

ALICE = Principal("alice")
BOB = Principal("bob")
ROOT = Principal("root", is_superuser=True)


def test_is_owner() -> None:
    assert is_owner(ALICE, "alice", superuser_may=False)
    assert not is_owner(BOB, "alice", superuser_may=True)
    assert not is_owner(ALICE, None, superuser_may=False)
    assert is_owner(ROOT, "alice", superuser_may=True)
    assert not is_owner(ROOT, "alice", superuser_may=False)


@pytest.mark.parametrize(
    ("superuser_may", "detail"),
    [
        (False, "Only the worker's owner may send its heartbeat"),
        (True, "Only the worker's owner or a superuser may send its heartbeat"),
    ],
)
def test_require_owner_wording(superuser_may: bool, detail: str) -> None:
    require_owner(ALICE, "alice", "worker", "send its heartbeat", superuser_may=superuser_may)
    with pytest.raises(Forbidden) as caught:
        require_owner(BOB, "alice", "worker", "send its heartbeat", superuser_may=superuser_may)
    assert caught.value.detail == detail


def test_who_may_update_a_task() -> None:
    # A task row as ``get_task_with_owner`` reads it: submitted by bob, claimed by alice's.
    # (A SimpleNamespace with the two fields the rule reads stands in for a store Record.)
    row = SimpleNamespace(created_by="bob", worker_user_id="alice")
    assert may_update_task(ALICE, row, TaskStatus.RUNNING)  # type: ignore[arg-type]
    assert may_update_task(ROOT, row, TaskStatus.FAILED)  # type: ignore[arg-type]
    assert not may_update_task(BOB, row, TaskStatus.RUNNING)  # type: ignore[arg-type]
    assert may_update_task(BOB, row, TaskStatus.CANCELLED)  # type: ignore[arg-type]
    unclaimed = SimpleNamespace(created_by="bob", worker_user_id=None)
    assert not may_update_task(ALICE, unclaimed, TaskStatus.CANCELLED)  # type: ignore[arg-type]
