"""The sweeper, in a real server: workers killed without a goodbye get their tasks failed.

The worker here is a process that only speaks HTTP (no Socket.IO connection to drop), so
only the sweeper can notice that it died: its heartbeat gets older than
``worker_timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from joblib_app import JoblibConfig, JobLibSettings, create_joblib_app, sweeper
from joblib_app.auth import static_token_authenticator
from joblib_app.models import utcnow
from joblib_app.services.workers import cleanup_workers
from joblib_app.store import workers
from tests.support.api import http
from tests.support.names import new_room
from tests.support.processes import WorkerProcess
from tests.support.realtime import Room, connect
from tests.support.server import RECONNECT_GRACE, ServerProcess, sqlite_env

WORKER_TIMEOUT = 2.0
SWEEP_INTERVAL = 1.0
FAST_SWEEP = {
    "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": f"{WORKER_TIMEOUT:g}",
    "ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS": f"{SWEEP_INTERVAL:g}",
    **RECONNECT_GRACE,
}
# Process start-up of the killed worker, scheduling on a busy 2-core machine.
SLACK = 1.0


class SweptServer(SimpleNamespace):
    server: ServerProcess
    lifespan: bool
    started_before_first_request: bool
    log_path: Path


@pytest.fixture(scope="module", params=["1", "0"], ids=["host-lifespan", "first-request"])
def swept(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SweptServer]:
    """A server with a 2 s worker timeout and a 1 s sweep, with and without the host
    passing ``joblib.lifespan``."""
    workdir = tmp_path_factory.mktemp("sweeper")
    log_path = workdir / "server.log"
    env = sqlite_env(workdir, JOBLIB_TEST_LIFESPAN=request.param, **FAST_SWEEP)
    with ServerProcess(env, log_path=log_path) as server:
        started = httpx.get(server.origin + "/joblib-started").json()["started"]
        yield SweptServer(
            server=server,
            lifespan=request.param == "1",
            started_before_first_request=started,
            log_path=log_path,
        )


async def test_sweeper_fails_the_task_of_a_killed_http_only_worker(swept: SweptServer) -> None:
    # Started at boot by the host's lifespan, or not before the first request reaches it.
    assert swept.started_before_first_request is swept.lifespan
    server = swept.server
    # Without the host's lifespan, this Socket.IO connection is the app's first request.
    frontend = await connect(server, "user:alice")
    async with http(server, "user:alice") as api:
        room = await Room(api).setup()
        process = WorkerProcess(server, room.id, "http")
        try:
            await frontend.join_room(room.id)
            info = await process.ready()
            # The worker's last heartbeat was its registration, before it reported ready.
            deadline = time.monotonic() + WORKER_TIMEOUT + SWEEP_INTERVAL + SLACK
            process.kill()
            failed = await frontend.wait_for(
                "task_status_event",
                within=deadline - time.monotonic(),
                id=info["task_id"],
                status="failed",
            )
            assert failed["error"] == "Worker disconnected"
            assert failed["worker_id"] == info["worker_id"]
            task = (await api.get(f"/tasks/{info['task_id']}")).json()
            assert task["status"] == "failed"
            # On the server's clock: the worker last beat (registered) before the task was
            # created, so the sweeper had at most timeout + interval (+ its cycle) from there.
            lived = datetime.fromisoformat(task["completed_at"]) - datetime.fromisoformat(
                task["created_at"]
            )
            assert lived.total_seconds() < WORKER_TIMEOUT + SWEEP_INTERVAL + 0.5
            workers = (await api.get("/workers", params={"limit": 500})).json()["items"]
            assert info["worker_id"] not in {w["id"] for w in workers}
        finally:
            process.close()
            await frontend.disconnect()
    assert "Sweeper cycle failed" not in swept.log_path.read_text()


async def test_sweeper_leaves_heartbeating_workers_alone(swept: SweptServer) -> None:
    """A worker that keeps beating outlives several timeouts with its task running."""
    server = swept.server
    room_id = new_room()
    async with http(server, "user:carol") as api:
        job = (
            await api.put(
                f"/rooms/{room_id}/jobs",
                json={"category": "modifiers", "name": "Alive", "schema": {}},
            )
        ).json()
        worker_id = job["worker_id"]
        task = (
            await api.post(f"/rooms/{room_id}/tasks/{job['full_name']}", json={"payload": {}})
        ).json()
        assert (await api.post("/tasks/claim", json={"worker_id": worker_id})).status_code == 200
        await api.patch(f"/tasks/{task['id']}", json={"status": "running"})
        # Long-poll the task in slices shorter than the timeout, beating between them: the
        # long-poll returning early would mean the sweeper failed a live worker's task.
        until = time.monotonic() + WORKER_TIMEOUT + SWEEP_INTERVAL + 0.5
        while time.monotonic() < until:
            assert (await api.patch(f"/workers/{worker_id}")).status_code == 200
            polled = await api.get(f"/tasks/{task['id']}", headers={"Prefer": "wait=0.5"})
            assert polled.json()["status"] == "running"
        await api.delete(f"/workers/{worker_id}")


def test_sweeper_stops_cleanly_on_shutdown(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    server = ServerProcess(sqlite_env(tmp_path, **FAST_SWEEP), log_path=log_path).start()
    started = time.monotonic()
    server.stop(signal.SIGTERM)
    assert server.process is not None
    # uvicorn re-raises the signal it handled once its graceful shutdown is done.
    assert server.process.returncode in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 5
    log = log_path.read_text()
    assert "Sweeper stopped" in log
    assert "joblib-app stopped" in log
    assert "Traceback" not in log


async def test_a_failing_cycle_is_logged_and_the_next_one_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: the loop around the cycle, with a cycle that fails once."""
    stop = asyncio.Event()
    cycles: list[int] = []

    async def flaky_sweep(ctx: Any, **_: Any) -> None:
        cycles.append(len(cycles))
        if len(cycles) == 1:
            raise RuntimeError("database went away")
        stop.set()

    monkeypatch.setattr(sweeper, "sweep_once", flaky_sweep)
    # The loop reads only ``settings`` of its context (the cycle is replaced above).
    ctx = SimpleNamespace(settings=JobLibSettings(sweeper_interval_seconds=0.01))
    with caplog.at_level(logging.ERROR, logger="joblib_app.sweeper"):
        await asyncio.wait_for(sweeper.run_sweeper(ctx, stop), timeout=5)  # type: ignore[arg-type]
    assert cycles == [0, 1]
    assert any("Sweeper cycle failed" in r.message and r.exc_info for r in caplog.records)


async def test_a_heartbeat_after_the_sweeper_read_its_worker_saves_it(tmp_path: Path) -> None:
    """In process: the race between the sweeper's read of stale ids and their cleanup."""
    app = create_joblib_app(
        JoblibConfig(
            authenticate=static_token_authenticator({}),
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'joblib.db'}",
            # The app's own sweeper must not take these workers: this test plays the sweeper.
            settings=JobLibSettings(worker_timeout_seconds=3600),
        )
    )
    await app.startup()
    try:
        long_ago = utcnow() - timedelta(seconds=600)
        async with app.db.write() as conn:
            beating = await workers.create_worker(conn, "alice", long_ago)
            dead = await workers.create_worker(conn, "alice", long_ago)
        cutoff = utcnow() - timedelta(seconds=60)
        # Both were stale when the sweeper read them; one beats before the cleanup runs.
        async with app.db.write() as conn:
            await workers.touch_worker(conn, beating.id, utcnow())
        removed = await cleanup_workers(
            app.context, [beating.id, dead.id], reason="test", stale_before=cutoff
        )
        assert removed == [dead.id]
        async with app.db.read() as conn:
            assert await workers.get_worker(conn, beating.id) is not None
    finally:
        await app.shutdown()
