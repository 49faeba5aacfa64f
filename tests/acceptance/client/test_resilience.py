"""Workers outliving the server, and leaving when they should."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from joblib_app.client import ApiError, JobManager, ServerUnreachable
from tests.acceptance.client.conftest import ALICE, make_server
from tests.acceptance.client.jobs import Echo, Gate
from tests.acceptance.client.processes import WorkerProcess, wait_until
from tests.support.server import ServerProcess, free_port

Spawn = Callable[..., WorkerProcess]


def submit_when_served(client: JobManager, room: str, timeout: float = 20) -> str:
    """Submit an Echo task as soon as the job is registered (again)."""

    def attempt() -> str | None:
        try:
            return client.submit(Echo(text="again"), room, job_room=room)
        except ApiError as exc:
            assert exc.status_code == 404, exc  # job soft-deleted until the worker is back
            return None

    return wait_until(attempt, timeout, interval=0.1, what=f"job registered in {room}")


@pytest.mark.parametrize("socketio", [True, False], ids=["socketio", "long-poll"])
def test_worker_carries_on_after_server_restart(
    own_server: ServerProcess, spawn_worker: Spawn, room: str, socketio: bool
) -> None:
    extra = () if socketio else ("--no-socketio",)
    worker = spawn_worker("--url", own_server.base, "--room", room, *extra)
    worker.ready()
    with JobManager(own_server.base, token=ALICE, use_socketio=False) as client:
        first = client.submit(Echo(text="before"), room, job_room=room)
        assert client.wait_for_task(first, timeout=10)["status"] == "completed"

    own_server.stop()
    own_server.start()

    with JobManager(own_server.base, token=ALICE, use_socketio=False) as client:
        try:
            task_id = submit_when_served(client, room)
        except TimeoutError as exc:
            raise AssertionError(worker.output) from exc
        task = client.wait_for_task(task_id, timeout=20)
    assert task["status"] == "completed", (task, worker.output)
    assert worker.process.poll() is None, worker.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_task_in_flight_completes_across_a_server_restart(
    own_server: ServerProcess, spawn_worker: Spawn, room: str, tmp_path: Path, sig: int
) -> None:
    """Issue 13: the server restarts while the worker runs a task. The worker keeps its id
    (the server still knows it: a shutdown cleans up no worker) and the task completes."""
    worker = spawn_worker("--url", own_server.base, "--room", room)
    worker_id = worker.ready()
    started, release = tmp_path / "started", tmp_path / "release"
    with JobManager(own_server.base, token=ALICE, use_socketio=False) as client:
        task_id = client.submit(
            Gate(started_path=str(started), release_path=str(release)), room, job_room=room
        )
        wait_until(started.exists, 15, what="task started")

    own_server.stop(sig)
    own_server.start()
    release.touch()

    with JobManager(own_server.base, token=ALICE, use_socketio=False) as client:
        task = client.wait_for_task(task_id, timeout=20)
    assert task["status"] == "completed", (task, worker.output)
    assert task["worker_id"] == worker_id
    assert task["attempt"] == 1
    assert "Re-registered" not in worker.output, worker.output
    assert worker.process.poll() is None, worker.output


def test_worker_exits_cleanly_when_server_stays_away(
    own_server: ServerProcess, spawn_worker: Spawn, room: str
) -> None:
    worker = spawn_worker(
        "--url", own_server.base, "--room", room, "--max-unreachable", "2"
    )  # fmt: skip
    worker.ready()
    own_server.stop()
    assert worker.wait(20) == 0, worker.output
    assert "EXIT server unreachable" in worker.output


def test_worker_exits_cleanly_when_its_registration_is_deleted(
    server: ServerProcess, client: JobManager, spawn_worker: Spawn, room: str
) -> None:
    worker = spawn_worker("--url", server.base, "--room", room)
    worker_id = worker.ready()
    client.api.request("DELETE", f"/workers/{worker_id}")
    assert worker.wait(15) == 0, worker.output
    assert "EXIT worker registration gone" in worker.output


def test_startup_retries_until_the_server_is_up(tmp_path: Path, room: str) -> None:
    late = make_server(tmp_path)
    starter = threading.Thread(target=late.start)
    starter.start()
    try:
        with JobManager(late.base, token=ALICE, startup_timeout=30) as manager:
            manager.register(Echo, room=room)
            assert manager.worker_id is not None
    finally:
        starter.join()
        late.stop()


def test_startup_gives_up_after_startup_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/joblib"
    with pytest.raises(ServerUnreachable):
        JobManager(url, token=ALICE, startup_timeout=0.5)
