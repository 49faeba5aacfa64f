"""Every thread a JobManager starts is named ``joblib-...`` and joined when it stops."""

from __future__ import annotations

import threading
from pathlib import Path

from joblib_app.client import JobManager, StopCause
from joblib_app.client.threads import THREAD_PREFIX, OwnedThreads
from tests.acceptance.client.conftest import ALICE
from tests.acceptance.client.jobs import Echo, FileNames
from tests.support.server import ServerProcess


def started_since(before: set[threading.Thread]) -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t not in before and t.is_alive())


def test_no_thread_outlives_disconnect(
    server: ServerProcess, client: JobManager, room: str, tmp_path: Path
) -> None:
    before = set(threading.enumerate())
    with JobManager(
        server.base,
        token=ALICE,
        execute=lambda task: task.run(),
        concurrency=2,
        heartbeat_interval=0.5,
        claim_wait_seconds=5,
    ) as manager:
        manager.register(Echo, room=room, run_kwargs={"greeting": "hello"})
        manager.register_provider(FileNames, name="names", handler=tmp_path, room=room)
        task_id = client.submit(Echo(text="x"), room, job_room=room)
        assert client.wait_for_task(task_id, timeout=10)["status"] == "completed"
        running = started_since(before)
        assert running, "the manager runs no thread of its own"
        assert all(name.startswith(THREAD_PREFIX) for name in running), running
        kinds = {name.split("-")[1] for name in running}
        assert {"supervisor", "claimer", "socketio"} <= kinds, running
    assert started_since(before) == []


def test_no_thread_outlives_a_stop_of_its_own(
    server: ServerProcess, client: JobManager, room: str
) -> None:
    """The server deletes the worker: the manager stops itself, and wait() joins it all."""
    before = set(threading.enumerate())
    manager = JobManager(
        server.base, token=ALICE, execute=lambda task: task.run(), heartbeat_interval=0.2
    )
    manager.register(Echo, room=room)
    client.api.request("DELETE", f"/workers/{manager.worker_id}")
    assert manager.wait(timeout=10) is True
    assert manager.stop_cause is StopCause.WORKER_GONE
    assert started_since(before) == []


def test_owned_threads_forget_finished_ones_and_join_the_rest() -> None:
    threads = OwnedThreads("test")
    release = threading.Event()
    done = threads.start(lambda: None)
    done.join()
    blocked = threads.start(release.wait)
    assert threads.running() == [blocked]
    assert blocked.name.startswith(f"{THREAD_PREFIX}test-")
    assert threads.join_all(0.05) == [blocked]
    release.set()
    assert threads.join_all(5) == []
