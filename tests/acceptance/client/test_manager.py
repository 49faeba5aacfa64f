"""The JobManager API in-process against the served app, plus its pure helpers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from joblib_app.client import ApiError, ClaimedTask, JobManager, Provider, ServerUnreachable
from joblib_app.client.http import OutageTracker
from joblib_app.client.provider_answers import encode_result
from joblib_app.client.realtime import split_socketio_url
from tests.acceptance.client.conftest import ALICE
from tests.acceptance.client.jobs import Boom, Echo, FileNames
from tests.support.server import ServerProcess


@pytest.fixture
def manager(server: ServerProcess) -> Iterator[JobManager]:
    with JobManager(server.base, token=ALICE, heartbeat_interval=0.5) as instance:
        yield instance


def test_register_forms_and_mapping(server: ServerProcess, manager: JobManager, room: str) -> None:
    assert manager.worker_id is None
    assert manager.register(Echo, room=room, run_kwargs={"greeting": "hello"}) is Echo

    @manager.register(room=room)
    class Local(Boom):
        pass

    assert manager.worker_id is not None
    assert set(manager) == {f"{room}:modifiers:Echo", f"{room}:analysis:Local"}
    assert len(manager) == 2
    assert manager[f"{room}:modifiers:Echo"] is Echo
    assert f"{room}:analysis:Local" in manager
    assert dict(manager.items())[f"{room}:analysis:Local"] is Local

    # The bare decorator registers in @global, which needs a superuser.
    with JobManager(server.base, token="admin", use_socketio=False) as admin:

        @admin.register
        class GlobalEcho(Echo):
            pass

        assert "@global:modifiers:GlobalEcho" in admin


def test_manual_claim_start_complete_fail_cancel(
    manager: JobManager, client: JobManager, room: str
) -> None:
    manager.register(Echo, room=room, run_kwargs={"greeting": "hello"})
    manager.register(Boom, room=room)
    assert manager.claim() is None
    manager.heartbeat()

    done_id = client.submit(Echo(text="x"), room, job_room=room)
    task = manager.claim(wait=5)
    assert isinstance(task, ClaimedTask)
    assert (task.task_id, task.job_name, task.room_id) == (done_id, f"{room}:modifiers:Echo", room)
    assert task.extension == Echo(text="x")
    assert task.run_kwargs == {"greeting": "hello"}
    manager.start(task)
    assert task.run() == "x"
    manager.complete(task)
    assert client.get_task(done_id)["status"] == "completed"

    failed_id = client.submit(Boom(), room, job_room=room)
    task = manager.claim(wait=5)
    assert task is not None and task.task_id == failed_id
    manager.fail_by_id(task.task_id, "nope")
    assert client.get_task(failed_id)["error"] == "nope"

    cancelled_id = client.submit(Echo(), room, job_room=room)
    task = manager.claim(wait=5)
    assert task is not None
    manager.cancel(task)
    assert client.get_task(cancelled_id)["status"] == "cancelled"

    with pytest.raises(ApiError) as info:
        manager.complete(task)
    assert (info.value.status_code, info.value.kind) == (409, "invalid-task-transition")


def test_listen_yields_tasks_until_stopped(
    manager: JobManager, client: JobManager, room: str
) -> None:
    manager.register(Echo, room=room, run_kwargs={"greeting": "hello"})
    ids = [client.submit(Echo(text=str(i)), room, job_room=room) for i in range(3)]
    stop = threading.Event()
    seen = []
    for task in manager.listen(stop, wait=5):
        manager.start(task)
        manager.complete(task)
        seen.append(task.task_id)
        if len(seen) == 3:
            stop.set()
    assert seen == ids


def test_disconnect_is_idempotent_and_thread_safe(
    server: ServerProcess, client: JobManager, room: str
) -> None:
    worker = JobManager(server.base, token=ALICE)
    worker.register(Echo, room=room)
    worker_id = worker.worker_id
    threads = [threading.Thread(target=worker.disconnect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    worker.disconnect()
    assert worker.stopped and worker.wait(0) is True

    with pytest.raises(ApiError) as info:
        client.api.request("PATCH", f"/workers/{worker_id}")
    assert info.value.kind == "worker-not-found"
    with pytest.raises(ApiError) as info:
        client.api.request("GET", f"/rooms/{room}/jobs/{room}:modifiers:Echo")
    assert info.value.kind == "job-not-found"


def test_provider_registration_and_handlers(manager: JobManager, room: str, tmp_path: Path) -> None:
    provider_id = manager.register_provider(FileNames, name="names", handler=tmp_path, room=room)
    name = f"{room}:files:names"
    assert manager.handlers == {name: tmp_path}
    info = manager.api.request("GET", f"/rooms/{room}/providers/{name}/info").json()
    assert info["id"] == provider_id
    manager.unregister_provider(name)
    assert manager.handlers == {}
    manager.unregister_provider(name)  # unknown names are ignored


def test_errors_carry_the_problem(manager: JobManager) -> None:
    with pytest.raises(ApiError) as info:
        manager.api.request("GET", "/tasks/00000000-0000-0000-0000-000000000000")
    assert info.value.status_code == 404
    assert info.value.kind == "task-not-found"


# -- pure helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://h:8000/v1/joblib", ("http://h:8000", "v1/joblib/socket.io")),
        ("https://h/v1/joblib/", ("https://h", "v1/joblib/socket.io")),
        ("http://h:1", ("http://h:1", "socket.io")),
    ],
)
def test_split_socketio_url(base: str, expected: tuple[str, str]) -> None:
    assert split_socketio_url(base) == expected


class Blob(Provider):
    content_type: ClassVar[str] = "application/octet-stream"


def test_encode_result_by_content_type() -> None:
    assert encode_result({"a": [1, 2]}, FileNames) == b'{"a":[1,2]}'
    assert encode_result(b"\x00\x01", Blob) == b"\x00\x01"
    assert encode_result(memoryview(b"ab"), Blob) == b"ab"
    with pytest.raises(TypeError):
        encode_result({"a": 1}, Blob)


def test_outage_tracker() -> None:
    tracker = OutageTracker()
    assert tracker.elapsed() == 0 and not tracker.exceeded(0)
    tracker.record_failure()
    assert tracker.exceeded(-1) and not tracker.exceeded(None)
    tracker.record_success()
    assert tracker.elapsed() == 0


def test_transport_errors_are_retried_only_when_safe() -> None:
    failures: list[Exception] = []
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if failures:
            raise failures.pop(0)
        return httpx.Response(201, json={"id": "w1"})

    def fresh(*errors: Exception) -> None:
        calls.clear()
        failures[:] = errors

    request = httpx.Request("GET", "http://test")
    with JobManager(
        "http://test/v1/joblib", use_socketio=False, transport=httpx.MockTransport(handler)
    ) as manager:
        # A POST that may have reached the server is not repeated...
        fresh(httpx.ReadError("reset", request=request))
        with pytest.raises(ServerUnreachable):
            manager.create_worker()
        assert calls == ["POST"]
        # ...one that never left is.
        fresh(httpx.ConnectError("refused", request=request))
        assert manager.create_worker() == "w1"
        assert calls == ["POST", "POST"]
        # Idempotent methods are repeated after any transport error.
        fresh(httpx.ReadError("reset", request=request))
        manager.api.request("PATCH", "/workers/w1", retry_for=5)
        assert calls == ["PATCH", "PATCH"]
