"""Long-polls in one process (SQLite, in-process notifier): woken by the change itself."""

from __future__ import annotations

import asyncio
import time

from tests.support.api import claim, http, register_job, set_status, submit
from tests.support.names import new_room
from tests.support.server import ServerProcess
from tests.support.waiting import waiting

# Without a notification a waiter wakes only on its 5 s safety re-read.
WAKE_BOUND = 1.0


async def test_task_long_poll_wakes_when_the_task_becomes_terminal(server: ServerProcess) -> None:
    room_id = new_room()
    async with http(server, "user:alice") as api:
        job = await register_job(api, room_id, "Slow")
        task = await submit(api, room_id, job["full_name"])
        poll = asyncio.create_task(api.get(f"/tasks/{task['id']}", headers={"Prefer": "wait=10"}))
        await waiting(server, f"task:{task['id']}")
        # Non-terminal changes do not end the wait.
        await claim(api, job["worker_id"])
        await set_status(api, task["id"], "running")
        assert not poll.done()
        await set_status(api, task["id"], "failed")
        changed_at = time.monotonic()
        response = await asyncio.wait_for(poll, 10)
        assert time.monotonic() - changed_at < WAKE_BOUND
        assert response.headers["Preference-Applied"] == "wait=10"
        assert response.json()["status"] == "failed"


async def test_task_long_poll_times_out_with_the_current_state(server: ServerProcess) -> None:
    room_id = new_room()
    async with http(server, "user:alice") as api:
        job = await register_job(api, room_id, "Idle")
        task = await submit(api, room_id, job["full_name"])
        started = time.monotonic()
        response = await api.get(f"/tasks/{task['id']}", headers={"Prefer": "wait=0.3"})
        assert 0.3 <= time.monotonic() - started < 0.3 + WAKE_BOUND
        assert response.headers["Preference-Applied"] == "wait=0.3"
        assert response.json()["status"] == "pending"
        # A terminal task answers at once.
        await api.patch(f"/tasks/{task['id']}", json={"status": "cancelled"})
        started = time.monotonic()
        response = await api.get(f"/tasks/{task['id']}", headers={"Prefer": "wait=10"})
        assert response.json()["status"] == "cancelled"
        assert time.monotonic() - started < WAKE_BOUND


async def test_claim_long_poll_returns_the_task_submitted_while_waiting(
    server: ServerProcess,
) -> None:
    room_id = new_room()
    async with http(server, "user:alice") as api, http(server, "user:bob") as submitter:
        job = await register_job(api, room_id, "Waiting")
        second = await register_job(api, room_id, "AlsoServed", worker_id=job["worker_id"])
        poll = asyncio.create_task(
            api.post(
                "/tasks/claim", json={"worker_id": job["worker_id"]}, headers={"Prefer": "wait=10"}
            )
        )
        await waiting(server, f"job:{second['full_name']}")
        task = await submit(submitter, room_id, second["full_name"])
        submitted_at = time.monotonic()
        response = await asyncio.wait_for(poll, 10)
        assert time.monotonic() - submitted_at < WAKE_BOUND
        assert response.headers["Preference-Applied"] == "wait=10"
        claimed = response.json()["task"]
        assert claimed["id"] == task["id"]
        assert claimed["status"] == "claimed"
        assert claimed["worker_id"] == job["worker_id"]
