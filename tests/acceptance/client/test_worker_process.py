"""Auto-serve and listen workers in their own process, against the app under uvicorn."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from joblib_app.client import ApiError, JobManager
from tests.acceptance.client.jobs import Boom, Echo, Gate
from tests.acceptance.client.processes import WorkerProcess, wait_until
from tests.support.server import ServerProcess

Spawn = Callable[..., WorkerProcess]


def worker_args(server: ServerProcess, room: str, *extra: str) -> tuple[str, ...]:
    return ("--url", server.base, "--room", room, *extra)


def assert_worker_gone(client: JobManager, worker_id: str) -> None:
    with pytest.raises(ApiError) as info:
        client.api.request("PATCH", f"/workers/{worker_id}")
    assert info.value.status_code == 404


def job_active(client: JobManager, room: str, job: str) -> bool:
    try:
        client.api.request("GET", f"/rooms/{room}/jobs/{room}:{job}")
    except ApiError as exc:
        assert exc.status_code == 404, exc
        return False
    return True


@pytest.mark.parametrize("mode", ["auto", "listen"])
def test_submitted_tasks_complete_and_raising_ones_fail(
    server: ServerProcess, client: JobManager, spawn_worker: Spawn, room: str, mode: str
) -> None:
    worker = spawn_worker(*worker_args(server, room, "--mode", mode))
    worker.ready()

    ok_ids = [client.submit(Echo(text=f"t{i}"), room, job_room=room) for i in range(3)]
    boom_id = client.submit(Boom(message="kaboom 42"), room, job_room=room)

    for task_id in ok_ids:
        task = client.wait_for_task(task_id, timeout=15)
        assert task["status"] == "completed", task
        assert task["started_at"] is not None
    failed = client.wait_for_task(boom_id, timeout=15)
    assert failed["status"] == "failed"
    assert "kaboom 42" in failed["error"]


def test_sigterm_lets_the_task_in_flight_finish_then_deletes_the_worker(
    server: ServerProcess, client: JobManager, spawn_worker: Spawn, room: str, tmp_path: Path
) -> None:
    worker = spawn_worker(*worker_args(server, room))
    worker_id = worker.ready()
    started, release = tmp_path / "started", tmp_path / "release"
    task_id = client.submit(
        Gate(started_path=str(started), release_path=str(release)), room, job_room=room
    )
    wait_until(started.exists, 15, what="task started")

    worker.signal(signal.SIGTERM)
    # Had the worker been deleted before the task ended, the server would have failed it.
    release.touch()

    assert worker.wait(20) == 0, worker.output
    assert client.get_task(task_id)["status"] == "completed"
    assert_worker_gone(client, worker_id)
    for job in ("modifiers:Echo", "analysis:Boom", "selections:Gate"):
        assert not job_active(client, room, job), f"{job} still active"


@pytest.mark.parametrize("socketio", [False, True], ids=["sweeper", "socket-drop"])
def test_sigkill_fails_the_task_in_flight(
    server: ServerProcess,
    client: JobManager,
    spawn_worker: Spawn,
    room: str,
    tmp_path: Path,
    socketio: bool,
) -> None:
    # Without Socket.IO only the sweeper (heartbeat timeout 3 s here) can notice the death.
    extra = () if socketio else ("--no-socketio",)
    worker = spawn_worker(*worker_args(server, room, *extra))
    worker.ready()
    started, release = tmp_path / "started", tmp_path / "release"
    task_id = client.submit(
        Gate(started_path=str(started), release_path=str(release)), room, job_room=room
    )
    wait_until(started.exists, 15, what="task started")

    worker.signal(signal.SIGKILL)
    worker.wait(10)

    task = client.wait_for_task(task_id, timeout=20)
    assert task["status"] == "failed"
    assert task["error"] == "Worker disconnected"


def test_socketio_wakeup_delivers_tasks(
    server: ServerProcess, client: JobManager, spawn_worker: Spawn, room: str
) -> None:
    # No long-poll and a 60 s fallback poll: only task_available can wake this worker.
    worker = spawn_worker(
        *worker_args(server, room, "--claim-wait", "0", "--polling-interval", "60")
    )
    worker.ready()
    for i in range(2):
        task_id = client.submit(Echo(text=f"w{i}"), room, job_room=room)
        assert client.wait_for_task(task_id, timeout=10)["status"] == "completed"


def test_long_poll_delivers_tasks_without_socketio(
    server: ServerProcess, client: JobManager, spawn_worker: Spawn, room: str
) -> None:
    # No Socket.IO and a 60 s fallback poll: only the claim long-poll can deliver in time.
    worker = spawn_worker(
        *worker_args(
            server, room, "--no-socketio", "--claim-wait", "20", "--polling-interval", "60"
        )
    )
    worker.ready()
    for i in range(2):
        task_id = client.submit(Echo(text=f"p{i}"), room, job_room=room)
        assert client.wait_for_task(task_id, timeout=10)["status"] == "completed"
