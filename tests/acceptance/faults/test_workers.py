"""Issue 13: workers outlive a dropped connection; runs lost or too long are requeued while
attempts remain, else failed saying why.

Faults are real: Socket.IO connections closed under a worker, a worker that never reports.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import http, submit, task_counts
from tests.support.names import new_room
from tests.support.realtime import EventLog, connect
from tests.support.server import ServerProcess
from tests.support.waiting import wait_status

ALICE = "user:alice"
GRACE = 1.5
SERVER_ENV = {"ZNDRAW_JOBLIB_WORKER_RECONNECT_GRACE_SECONDS": f"{GRACE:g}"}
SLACK = 3.0


async def _register(api: httpx.AsyncClient, room: str, name: str, **policy: Any) -> dict[str, Any]:
    body = {"category": "modifiers", "name": name, "schema": {}, **policy}
    response = await api.put(f"/rooms/{room}/jobs", json=body)
    assert response.status_code in (200, 201), response.text
    registered: dict[str, Any] = response.json()
    return registered


def _log_has(server: ServerProcess, text: str) -> bool:
    assert server.log_path is not None
    return text in Path(server.log_path).read_text(errors="replace")


async def _logged(server: ServerProcess, text: str, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            if await asyncio.to_thread(_log_has, server, text):
                return
            await asyncio.sleep(0.05)


async def _attach(server: ServerProcess, job: dict[str, Any]) -> EventLog:
    """A worker's Socket.IO connection, joined to its job room."""
    link = await connect(server, ALICE)
    ack = await link.call(
        "join_job_room", {"job_name": job["full_name"], "worker_id": job["worker_id"]}
    )
    assert ack == {"status": "ok"}, ack
    return link


async def _running(api: httpx.AsyncClient, room: str, job: dict[str, Any]) -> dict[str, Any]:
    task = await submit(api, room, job["full_name"])
    claimed = (await api.post("/tasks/claim", json={"worker_id": job["worker_id"]})).json()
    assert claimed["task"]["id"] == task["id"]
    answer = await api.patch(f"/tasks/{task['id']}", json={"status": "running"})
    assert answer.status_code == 200, answer.text
    running: dict[str, Any] = answer.json()
    return running


async def test_worker_reattaching_within_the_grace_period_completes_its_task(
    server: ServerProcess,
) -> None:
    room = new_room()
    async with http(server.base, ALICE) as api:
        job = await _register(api, room, "Blip")
        link = await _attach(server, job)
        task = await _running(api, room, job)

        # The connection drops for a moment; the worker comes back with the same id.
        await link.disconnect()
        link = await _attach(server, job)
        try:
            # The grace period of the dropped connection ends, and its cleanup spares the
            # worker (the server logs it): the task is still running, the worker known.
            await _logged(server, "re-attached within", GRACE + SLACK)
            await wait_status(api, task["id"], "running", 1)
            assert (await api.patch(f"/workers/{job['worker_id']}")).status_code == 200
            done = await api.patch(f"/tasks/{task['id']}", json={"status": "completed"})
            assert done.status_code == 200, done.text
        finally:
            await link.disconnect()
        counts = await task_counts(api, room, {task["id"]: 1})
        assert counts == {"stuck": 0, "failed": 0, "lost": 0, "duplicated": 0}


async def test_dropped_worker_is_cleaned_up_after_the_grace_period(
    server: ServerProcess,
) -> None:
    room = new_room()
    async with http(server.base, ALICE) as api:
        once = await _register(api, room, "Once")
        twice = await _register(api, room, "Twice", max_attempts=2)
        link = await _attach(server, once)
        ack = await link.call(
            "join_job_room", {"job_name": twice["full_name"], "worker_id": twice["worker_id"]}
        )
        assert ack == {"status": "ok"}
        failing = await _running(api, room, once)
        retried = await _running(api, room, twice)
        assert retried["attempt"] == 1

        await link.disconnect()

        failed = await wait_status(api, failing["id"], "failed", GRACE + SLACK)
        assert "worker" in failed["error"].lower()
        back = await wait_status(api, retried["id"], "pending", SLACK)
        assert back["attempt"] == 2
        assert back["worker_id"] is None and back["started_at"] is None
        assert (await api.patch(f"/workers/{once['worker_id']}")).status_code == 404

        fresh = await _register(api, room, "Twice")
        claimed = (await api.post("/tasks/claim", json={"worker_id": fresh["worker_id"]})).json()
        assert claimed["task"]["id"] == retried["id"]
        for status in ("running", "completed"):
            answer = await api.patch(f"/tasks/{retried['id']}", json={"status": status})
            assert answer.status_code == 200, answer.text
        assert answer.json()["attempt"] == 2


async def test_run_longer_than_its_timeout_is_requeued_then_failed(
    server: ServerProcess,
) -> None:
    room = new_room()
    async with http(server.base, ALICE) as api:
        job = await _register(api, room, "Slow", max_attempts=2, timeout_seconds=0.5)
        first = await _running(api, room, job)

        back = await wait_status(api, first["id"], "pending", SLACK)
        assert back["attempt"] == 2
        # The first run's late report is refused: the task is queued again.
        late = await api.patch(f"/tasks/{first['id']}", json={"status": "completed"})
        assert late.status_code == 409, late.text

        claimed = (await api.post("/tasks/claim", json={"worker_id": job["worker_id"]})).json()
        assert claimed["task"]["id"] == first["id"]
        assert (
            await api.patch(f"/tasks/{first['id']}", json={"status": "running"})
        ).status_code == 200
        failed = await wait_status(api, first["id"], "failed", SLACK)
        assert "timed out" in failed["error"]
        assert failed["attempt"] == 2


async def test_registration_bounds_the_retry_policy(server: ServerProcess) -> None:
    room = new_room()
    async with http(server.base, ALICE) as api:
        for policy in ({"max_attempts": 0}, {"max_attempts": 101}, {"timeout_seconds": 0}):
            body = {"category": "modifiers", "name": "Bounded", "schema": {}, **policy}
            response = await api.put(f"/rooms/{room}/jobs", json=body)
            assert response.status_code == 422, (policy, response.text)
            assert response.headers["content-type"] == "application/problem+json"
