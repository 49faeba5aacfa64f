"""The SDK's results, progress, cancellation, concurrency and provider errors, with the worker
in its own process, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from joblib_app.client import JobManager, TaskCancelled, TaskFailed
from tests.acceptance.client.conftest import ALICE, FAST_SWEEP
from tests.acceptance.client.jobs import Boom, Compute, Gate, Slow
from tests.acceptance.client.processes import WorkerProcess, wait_until
from tests.support.databases import DATABASES, database
from tests.support.server import ServerProcess

# The cancelled line the SDK logs (at INFO) when the final report of a cancelled task is
# refused, as ``worker_main`` formats its log.
CANCELLED_LINE = "joblib_app.client.runner Task {} was cancelled"


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"sdk-results-{request.param}")
    with database(request.param, workdir) as url:
        env = {"JOBLIB_TEST_DATABASE_URL": url, **FAST_SWEEP}
        with ServerProcess(env, log_path=workdir / "server.log") as instance:
            yield instance


@pytest.fixture
def client(server: ServerProcess) -> Iterator[JobManager]:
    with JobManager(server.base, token=ALICE, use_socketio=False) as manager:
        yield manager


def worker(
    spawn_worker: Callable[..., WorkerProcess], server: ServerProcess, room: str, *args: str
) -> WorkerProcess:
    process = spawn_worker("--url", server.base, "--room", room, *args)
    process.ready()
    return process


def test_execute_return_value_is_the_result(
    server: ServerProcess, client: JobManager, spawn_worker: Callable[..., WorkerProcess], room: str
) -> None:
    worker(spawn_worker, server, room, "--jobs", "Compute,Boom")
    handle = client.submit(Compute(value=7, size=100), room, job_room=room)
    assert isinstance(handle, str) and handle.id == str(handle)
    assert handle.result(timeout=20) == {"square": 49, "pad": "x" * 100}
    task = handle.wait(timeout=5)
    assert task["status"] == "completed" and task["version"] == 4

    failing = client.submit(Boom(message="no luck"), room, job_room=room)
    with pytest.raises(TaskFailed) as failed:
        failing.result(timeout=20)
    assert "no luck" in failed.value.error


def test_large_results_round_trip(
    server: ServerProcess, client: JobManager, spawn_worker: Callable[..., WorkerProcess], room: str
) -> None:
    worker(spawn_worker, server, room, "--jobs", "Compute")
    # Just under the default max_task_result_bytes (1 MiB) as JSON.
    size = 1_048_576 - 100
    assert client.submit(Compute(value=2, size=size), room, job_room=room).result(20) == {
        "square": 4,
        "pad": "x" * size,
    }
    # Over it: the server answers 413 and the SDK fails the task with the reason.
    with pytest.raises(TaskFailed) as failed:
        client.submit(Compute(value=2, size=1_048_576), room, job_room=room).result(20)
    assert "max_task_result_bytes" in failed.value.error


@pytest.mark.parametrize("socketio", [True, False], ids=["socketio", "rest-only"])
def test_cancelled_30s_task_stops_promptly(
    server: ServerProcess,
    client: JobManager,
    spawn_worker: Callable[..., WorkerProcess],
    room: str,
    tmp_path: Path,
    socketio: bool,
) -> None:
    # With Socket.IO the cancel arrives at once, whatever the progress interval; without,
    # the answer to the next progress report carries it: within one interval, plus that
    # report's round trip.
    interval = 5.0 if socketio else 1.0
    bound = 1.0 if socketio else interval + 0.3
    args = ["--jobs", "Slow"] + ([] if socketio else ["--no-socketio", "--claim-wait", "2"])
    process = worker(spawn_worker, server, room, *args)
    started = tmp_path / f"started-{uuid.uuid4().hex}"
    stopped = tmp_path / f"stopped-{uuid.uuid4().hex}"
    slow = Slow(seconds=30, interval=interval, started_path=str(started), stopped_path=str(stopped))
    handle = client.submit(slow, room, job_room=room)
    wait_until(started.exists, 20, what="the slow task started")

    def reported() -> dict[str, Any] | None:
        task = handle.status()
        return task if task["progress"] is not None else None

    task = wait_until(reported, 10, what="progress")
    assert task["status"] == "running"
    assert task["progress_message"].startswith("step ")
    began = time.time()
    assert handle.cancel()["status"] == "cancelled"
    wait_until(lambda: stopped.exists() and stopped.read_text(), bound + 5, what="stopped")
    took = float(stopped.read_text()) - began
    assert took < bound, f"stopped {took:.2f} s after the cancel"
    # Its final report is refused (409), which the SDK logs at INFO.
    process.wait_for_line(CANCELLED_LINE.format(handle.id), timeout=5)
    with pytest.raises(TaskCancelled):
        handle.result(timeout=5)
    assert "ERROR" not in process.output and "Traceback" not in process.output


def test_concurrency_runs_tasks_at_once(
    server: ServerProcess,
    client: JobManager,
    spawn_worker: Callable[..., WorkerProcess],
    room: str,
    tmp_path: Path,
) -> None:
    worker(spawn_worker, server, room, "--jobs", "Gate", "--concurrency", "3")
    release = tmp_path / "release"
    gates = [tmp_path / f"started-{n}" for n in range(3)]
    handles = [
        client.submit(Gate(started_path=str(path), release_path=str(release)), room, job_room=room)
        for path in gates
    ]
    # All three run before any is released: three claims, three threads.
    wait_until(lambda: all(p.exists() for p in gates), 20, what="three tasks running at once")
    release.write_text("go")
    assert [h.wait(timeout=20)["status"] for h in handles] == ["completed"] * 3


def test_provider_read_that_raises_answers_502(
    server: ServerProcess, spawn_worker: Callable[..., WorkerProcess], room: str, tmp_path: Path
) -> None:
    worker(spawn_worker, server, room, "--mode", "provider", "--provider-dir", str(tmp_path))
    name = f"{room}:files:bytes"
    began = time.monotonic()
    answer = httpx.get(
        f"{server.base}/rooms/{room}/providers/{name}",
        params={"path": "missing.bin"},
        headers={"Authorization": f"Bearer {ALICE}", "Prefer": "wait=10"},
        timeout=30,
    )
    assert answer.status_code == 502, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"].endswith("/provider-error")
    assert "FileNotFoundError" in answer.json()["detail"]
    assert time.monotonic() - began < 5


def test_repeated_reports_are_success_for_the_sdk(server: ServerProcess, room: str) -> None:
    """A retried update (its first answer lost) finds the status already set: 200."""

    with JobManager(server.base, token=ALICE, use_socketio=False) as manager:
        manager.register(Compute, room=room)
        handle = manager.submit(Compute(value=3), room, job_room=room)
        task = manager.claim(wait=5)
        assert task is not None and task.task_id == handle.id
        manager.start(task)
        manager.start(task)
        manager.complete(task, result={"square": 9})
        manager.complete(task, result={"square": 9})
        assert handle.result(timeout=5) == {"square": 9}
