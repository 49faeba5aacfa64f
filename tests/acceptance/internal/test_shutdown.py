"""Shutting down a server that runs ``@internal`` tasks itself (taskiq ``InMemoryBroker``):
running tasks get a grace period to finish, and those still running after it are failed
instead of staying "running" until the sweeper's internal timeout."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import post_task
from tests.support.internal_jobs import WAIT
from tests.support.names import ADMIN, auth, new_room
from tests.support.server import ServerProcess, sqlite_env, start_internal_server

WITHIN = 20.0


async def _until(condition: Any, what: str, within: float = WITHIN) -> None:
    """Wait for ``condition()`` to hold, checking every few milliseconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _start_waiting_task(server: ServerProcess, release: Path) -> str:
    """Submit a task that runs until ``release`` exists; return its id once it runs."""
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
        task = (await post_task(http, new_room(), WAIT, {"path": str(release)})).json()

        async def running() -> bool:
            response = await http.get(f"/tasks/{task['id']}", headers=auth(ADMIN))
            status: str = response.json()["status"]
            return status == "running"

        await _until(running, "the internal task to run")
    task_id: str = task["id"]
    return task_id


def _stored_task(database: Path, task_id: str) -> tuple[str, str | None]:
    with sqlite3.connect(database) as conn:
        row = conn.execute(
            "SELECT status, error FROM joblib_task WHERE id = ?", (task_id,)
        ).fetchone()
    return row[0], row[1]


async def _exited(server: ServerProcess) -> bool:
    assert server.process is not None
    return server.process.poll() is not None


async def test_shutdown_waits_for_a_running_internal_task(tmp_path: Path) -> None:
    env = {**sqlite_env(tmp_path), "ZNDRAW_JOBLIB_INTERNAL_SHUTDOWN_GRACE_SECONDS": "60"}
    server = start_internal_server(env, tmp_path)
    release = tmp_path / "release"
    try:
        task_id = await _start_waiting_task(server, release)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        log = tmp_path / "server.log"

        async def waiting() -> bool:
            return "Waiting up to 60 s for 1 internal task" in log.read_text()

        await _until(waiting, "the server to wait for the task")
        assert server.process.poll() is None, "the server left before its task finished"
        release.touch()
        await _until(lambda: _exited(server), "the server to exit")
        # uvicorn re-raises the signal after a graceful shutdown.
        assert server.process.returncode in (0, -signal.SIGTERM)
        assert "joblib-app stopped" in log.read_text()
        assert _stored_task(tmp_path / "joblib.db", task_id) == ("completed", None)
    finally:
        release.touch()
        server.stop(signal.SIGKILL)


async def test_task_still_running_after_the_grace_period_is_failed(tmp_path: Path) -> None:
    env = {**sqlite_env(tmp_path), "ZNDRAW_JOBLIB_INTERNAL_SHUTDOWN_GRACE_SECONDS": "0.5"}
    server = start_internal_server(env, tmp_path)
    release = tmp_path / "release"
    database = tmp_path / "joblib.db"
    try:
        task_id = await _start_waiting_task(server, release)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)

        async def failed() -> bool:
            return _stored_task(database, task_id)[0] == "failed"

        await _until(failed, "the task to be failed at shutdown")
        assert _stored_task(database, task_id) == (
            "failed",
            "The server shut down before the task finished",
        )
        # run() is a thread nobody can stop; once it returns, the process ends.
        release.touch()
        await _until(lambda: _exited(server), "the server to exit")
        assert _stored_task(database, task_id)[0] == "failed"
    finally:
        release.touch()
        server.stop(signal.SIGKILL)
