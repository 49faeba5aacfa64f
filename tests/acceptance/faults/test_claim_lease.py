"""Issue 13, claim lease: a claim whose answer is lost goes back to the head of its queue;
a claim long-poll whose client is gone claims nothing.

Faults are real: a loopback proxy that loses the claim's answer, and a worker process
SIGKILLed while its claim long-poll is open.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import httpx

from tests.acceptance.faults.conftest import CLAIM_LEASE
from tests.support.api import http, register_job, submit, task_counts
from tests.support.faults import DropAnswersProxy
from tests.support.names import new_room
from tests.support.realtime import EventLog, connect
from tests.support.server import ServerProcess
from tests.support.waiting import wait_status

ALICE = "user:alice"
# Sweeper period and scheduling on a busy machine.
SLACK = 3.0


async def _waiters(server: ServerProcess, channel: str) -> int:
    async with httpx.AsyncClient(base_url=server.origin, timeout=5) as http:
        count: int = (await http.get(f"/joblib-waiters/{channel}")).json()["count"]
        return count


async def _wait_waiters(server: ServerProcess, channel: str, count: int, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            if await _waiters(server, channel) == count:
                return
            await asyncio.sleep(0.01)


async def test_lost_claim_answer_returns_the_task_to_the_head_of_its_queue(
    server: ServerProcess,
) -> None:
    room = new_room()
    events: EventLog = await connect(server, ALICE)
    try:
        await events.join_room(room)
        async with http(server.base, ALICE) as api, DropAnswersProxy(server.port) as proxy:
            job = await register_job(api, room, "Lease")
            worker = job["worker_id"]
            first = await submit(api, room, job["full_name"])
            second = await submit(api, room, job["full_name"])
            # The claim is made, but its answer never reaches the worker.
            async with http(proxy.base(server), ALICE) as lossy:
                try:
                    await lossy.post("/tasks/claim", json={"worker_id": worker})
                    raise AssertionError("the proxy should have lost the answer")
                except httpx.TransportError:
                    pass
            assert proxy.answers_dropped == 1
            claimed_at = time.monotonic()
            assert (await api.get(f"/tasks/{first['id']}")).json()["status"] == "claimed"

            back = await wait_status(api, first["id"], "pending", CLAIM_LEASE + SLACK)
            assert time.monotonic() - claimed_at >= CLAIM_LEASE * 0.9
            # Its place is kept: first in its queue, before the task submitted after it.
            assert back["queue_position"] == 1
            assert back["worker_id"] is None
            await events.wait_for("task_status_event", id=first["id"], status="pending")

            # The old claimer's late update is refused: the task is pending again.
            late = await api.patch(f"/tasks/{first['id']}", json={"status": "running"})
            assert late.status_code == 409, late.text
            assert late.headers["content-type"] == "application/problem+json"

            runs: dict[str, int] = {}
            for _ in range(2):
                task = (await api.post("/tasks/claim", json={"worker_id": worker})).json()["task"]
                runs[task["id"]] = runs.get(task["id"], 0) + 1
                for status in ("running", "completed"):
                    answer = await api.patch(f"/tasks/{task['id']}", json={"status": status})
                    assert answer.status_code == 200, answer.text
            assert list(runs) == [first["id"], second["id"]]
            counts = await task_counts(api, room, runs)
            assert counts == {"stuck": 0, "failed": 0, "lost": 0, "duplicated": 0}
    finally:
        await events.disconnect()


async def test_requeued_claim_announces_task_available(server: ServerProcess) -> None:
    room = new_room()
    async with http(server.base, ALICE) as api:
        job = await register_job(api, room, "Announce")
        worker = job["worker_id"]
        events: EventLog = await connect(server, ALICE)
        try:
            ack = await events.call(
                "join_job_room", {"job_name": job["full_name"], "worker_id": worker}
            )
            assert ack == {"status": "ok"}, ack
            task = await submit(api, room, job["full_name"])
            await events.wait_for("task_available", task_id=task["id"])
            claimed = (await api.post("/tasks/claim", json={"worker_id": worker})).json()["task"]
            assert claimed["id"] == task["id"]

            await wait_status(api, task["id"], "pending", CLAIM_LEASE + SLACK)
            async with asyncio.timeout(SLACK):
                while True:
                    if len(events.matching("task_available", task_id=task["id"])) == 2:
                        break
                    await asyncio.sleep(0.02)
        finally:
            await events.disconnect()


_LONG_POLL = """
import sys, httpx
base, token, worker = sys.argv[1:4]
with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as h:
    print(h.post("/tasks/claim", json={"worker_id": worker}, headers={"Prefer": "wait=30"}).text)
"""


async def test_killed_long_polling_worker_claims_nothing(server: ServerProcess) -> None:
    room = new_room()
    async with http(server.base, ALICE) as api:
        job = await register_job(api, room, "Abandoned")
        channel = f"job:{job['full_name']}"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _LONG_POLL,
            server.base,
            ALICE,
            job["worker_id"],
            stdout=asyncio.subprocess.DEVNULL,
        )
        try:
            await _wait_waiters(server, channel, 1, within=20)
            process.send_signal(signal.SIGKILL)
            await process.wait()
            # The server notices the hang-up and ends the long-poll (with the old code it
            # stayed, and claimed the next task 0.06 s after its submit).
            await _wait_waiters(server, channel, 0, within=SLACK)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

        task = await submit(api, room, job["full_name"])
        assert (await api.get(f"/tasks/{task['id']}")).json()["status"] == "pending"
        live = await register_job(api, room, "Abandoned")
        claimed = (await api.post("/tasks/claim", json={"worker_id": live["worker_id"]})).json()
        assert claimed["task"]["id"] == task["id"]
        assert claimed["task"]["worker_id"] == live["worker_id"]
