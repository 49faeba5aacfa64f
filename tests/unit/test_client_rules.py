"""The SDK's decisions as pure rules: no server, no I/O."""

from __future__ import annotations

import subprocess
import sys

import pytest

from joblib_app.client.errors import (
    ApiError,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    WorkerGone,
    api_error,
    as_worker_gone,
)
from joblib_app.client.http import prefer_wait_header as prefer_wait
from joblib_app.client.state import Contact, GoneVerdict, ManagerState, Phase, StopCause
from joblib_app.client.supervisor import ClaimBackoff, HeartbeatSchedule


def problem(kind: str) -> dict[str, str]:
    return {"type": f"/v1/problems/{kind}", "detail": "x"}


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (404, "worker-not-found", WorkerGone),
        (404, "task-not-found", NotFound),
        (403, "forbidden", Forbidden),
        (409, "invalid-task-transition", Conflict),
        (413, "payload-too-large", PayloadTooLarge),
        (503, "service-unavailable", ServiceUnavailable),
        (400, "invalid-room-id", ApiError),
    ],
)
def test_errors_are_typed_by_problem_kind_then_status(
    status: int, kind: str, expected: type[ApiError]
) -> None:
    error = api_error(status, problem(kind))
    assert type(error) is expected
    assert (error.status_code, error.kind) == (status, kind)


def test_worker_calls_read_403_and_404_as_worker_gone() -> None:
    for error in (api_error(403, problem("forbidden")), api_error(404, problem("x"))):
        gone = as_worker_gone(error)
        assert isinstance(gone, WorkerGone) and gone.status_code == error.status_code
    conflict = api_error(409, problem("invalid-task-transition"))
    assert as_worker_gone(conflict) is conflict


@pytest.mark.parametrize(
    ("contact", "verdict"),
    [
        (Contact(), GoneVerdict.STOP),
        (Contact(unconfirmed=True), GoneVerdict.RESYNC),
        (Contact(resync_due=True), GoneVerdict.RESYNC),
        (Contact(socket_down=True, unconfirmed=True), GoneVerdict.AWAIT_RECONNECT),
        (Contact(socket_down=True, resync_due=True), GoneVerdict.AWAIT_RECONNECT),
    ],
)
def test_worker_gone_means_stop_only_while_in_contact(
    contact: Contact, verdict: GoneVerdict
) -> None:
    assert contact.gone_verdict() is verdict
    assert contact.recovering is (verdict is not GoneVerdict.STOP)


def test_outage_then_sweep_then_reattach() -> None:
    state = ManagerState()
    state.contact_failed()
    assert state.recovering
    # Swept meanwhile: a re-registration is due, the manager keeps serving.
    assert state.worker_gone() is GoneVerdict.RESYNC
    assert state.take_resync() and not state.take_resync()
    state.resync_failed()
    assert state.take_resync()
    state.registration_confirmed(state.drops())
    assert not state.recovering and state.task_ready.is_set()
    assert state.worker_gone() is GoneVerdict.STOP


def test_a_drop_during_the_reregistration_confirms_nothing() -> None:
    """The rooms re-joined before a drop are gone again: the contact stays lost, and
    another re-registration is due, so a later 404 re-registers instead of stopping."""
    state = ManagerState()
    state.socket_dropped()
    state.socket_reconnected(has_worker=True)
    assert state.take_resync()
    before = state.drops()
    state.socket_dropped()  # the Socket.IO thread, while the supervisor re-attaches
    assert state.registration_confirmed(before) is False
    assert state.recovering and state.contact().resync_due
    # A 404 now waits for the reconnection (then re-registers); it never stops the manager.
    assert state.worker_gone() is GoneVerdict.AWAIT_RECONNECT


def test_socket_drop_and_reconnect() -> None:
    state = ManagerState()
    state.socket_dropped()
    assert state.contact() == Contact(socket_down=True, unconfirmed=True)
    assert state.supervisor_wake.is_set()
    # The server answering the heartbeat confirms the worker; the rooms still need a resync.
    assert state.heartbeat_answered() is True
    assert state.heartbeat_answered() is False
    state.socket_reconnected(has_worker=True)
    assert state.contact() == Contact(socket_down=True, resync_due=True)
    assert state.take_resync()
    state.registration_confirmed(state.drops())
    assert state.contact() == Contact()
    state.socket_dropped()
    state.socket_reconnected(has_worker=False)
    assert not state.contact().socket_down


def test_the_first_stop_cause_wins() -> None:
    state = ManagerState()
    assert state.stop_on_own(StopCause.UNREACHABLE, "server unreachable for 3s")
    assert not state.stop_on_own(StopCause.WORKER_GONE, "worker registration gone")
    state.request_stop()
    assert state.stop_cause is StopCause.UNREACHABLE
    assert state.stop_reason == "server unreachable for 3s"
    assert state.stop_requested.is_set() and state.task_ready.is_set()

    requested = ManagerState()
    requested.request_stop()
    assert not requested.stop_on_own(StopCause.WORKER_GONE, "our own DELETE's 404")
    assert (requested.stop_cause, requested.stop_reason) == (StopCause.REQUESTED, None)


def test_a_task_claimed_while_closing_is_not_run() -> None:
    state = ManagerState()
    assert state.begin_task()
    state.request_stop()
    assert state.stopping and state.begin_task()
    state.end_task()
    state.end_task()
    state.close_after_tasks(timeout=1)
    assert state.phase is Phase.CLOSING and not state.begin_task()


def test_heartbeat_schedule() -> None:
    schedule = HeartbeatSchedule(interval=15.0, due=115.0)
    assert schedule.wait_time(100.0, recovering=False) == 15.0
    # While recovering the supervisor probes every second.
    assert schedule.wait_time(100.0, recovering=True) == 1.0
    schedule.beat_sent(101.0)
    assert schedule.wait_time(101.0, recovering=False) == 15.0
    schedule.beat_unanswered(101.0)
    assert schedule.wait_time(101.0, recovering=False) == 1.0
    short = HeartbeatSchedule(interval=0.5, due=0.0)
    short.beat_unanswered(10.0)
    assert short.due == 10.5


def test_claim_backoff_doubles_to_a_cap_and_resets() -> None:
    backoff = ClaimBackoff()
    assert [backoff.failed() for _ in range(6)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    backoff.succeeded()
    assert backoff.failed() == 0.2


def test_prefer_wait() -> None:
    assert prefer_wait(None) is None and prefer_wait(0) is None
    assert prefer_wait(25.0) == {"Prefer": "wait=25"}
    assert prefer_wait(0.5) == {"Prefer": "wait=0.5"}


def test_importing_the_sdk_loads_no_server_library() -> None:
    """A worker needs no server extra: ``joblib_app.client`` must not import the server."""
    code = (
        "import sys, joblib_app.client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'fastapi', 'starlette', 'sqlalchemy', 'sqlmodel', 'uvicorn', 'taskiq'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
