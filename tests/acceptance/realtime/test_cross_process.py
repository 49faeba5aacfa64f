"""Two server processes on two ports sharing PostgreSQL and Redis: events, long-polls and
claim long-polls cross from one process to the other, and two sweepers share the work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api import claim_one, http, register_job, set_status, submit
from tests.support.processes import WorkerProcess
from tests.support.realtime import Room, connect
from tests.support.server import ServerProcess
from tests.support.waiting import wait_until, waiting

ALICE = "user:alice"
# Without a notification a waiter wakes only on its 5 s safety re-read: a wake-up within
# this bound came from the notifier.
WAKE_BOUND = 1.0
WAIT = "wait=10"


def start_pair(
    postgres_url: str, redis_url: str, redis_prefix: str, workdir: Path, **extra: str
) -> tuple[ServerProcess, ServerProcess]:
    """Start A (/v1/joblib) and B (/api/x/jobs) on one database and one Redis prefix."""
    env = {
        "JOBLIB_TEST_DATABASE_URL": postgres_url,
        "JOBLIB_TEST_REDIS_URL": redis_url,
        "JOBLIB_TEST_REDIS_PREFIX": redis_prefix,
        **extra,
    }
    a = ServerProcess(env, log_path=workdir / "a.log").start()
    try:
        b = ServerProcess(env, mount="/api/x/jobs", log_path=workdir / "b.log").start()
    except BaseException:
        a.stop()
        raise
    return a, b


@pytest.fixture
def pair(
    postgres_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Process A at /v1/joblib and process B at /api/x/jobs, one database, one Redis."""
    a, b = start_pair(postgres_url, redis_url, redis_prefix, tmp_path)
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


async def _running_task(api_b: httpx.AsyncClient, room: Room) -> tuple[dict[str, Any], str]:
    job = await register_job(api_b, room.id, "Remote")
    task = await submit(api_b, room.id, job["full_name"])
    assert (await claim_one(api_b, job["worker_id"]))["id"] == task["id"]
    await set_status(api_b, task["id"], "running")
    return task, job["worker_id"]


async def test_status_event_of_a_task_completed_through_b_reaches_a_client_on_a(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    async with http(a, ALICE) as api_a, http(b, ALICE) as api_b:
        room = await Room(api_a).setup()
        frontend = await connect(a, ALICE)
        order = ["pending", "claimed", "running", "completed"]
        # [event status, status read back]: the client runs each event's handler as a task
        # of its own, so the reads overlap; the entry is added on receipt, in event order.
        seen: list[list[str | None]] = []

        async def read_back(name: str, data: dict[str, Any]) -> None:
            # Emitted after commit: a read through the other process, made on receipt,
            # already shows this status (or a later one).
            if name == "task_status_event" and data["room_id"] == room.id:
                entry: list[str | None] = [data["status"], None]
                seen.append(entry)
                entry[1] = (await _read_task(api_a, data["id"]))["status"]

        frontend.hooks.append(read_back)
        try:
            await frontend.join_room(room.id)
            task, worker_id = await _running_task(api_b, room)
            await set_status(api_b, task["id"], "completed")
            done = await frontend.wait_for("task_status_event", id=task["id"], status="completed")
            assert done["worker_id"] == worker_id
            assert done["room_id"] == room.id
            await room.flush(frontend)
            statuses = [e["status"] for e in frontend.matching("task_status_event", id=task["id"])]
            assert statuses == order
            assert [event for event, _ in seen[:4]] == order
            await wait_until(lambda: all(read is not None for _, read in seen[:4]))
            for event_status, read_status in seen[:4]:
                assert event_status is not None and read_status is not None
                assert order.index(read_status) >= order.index(event_status)
        finally:
            await frontend.disconnect()


async def test_task_available_from_b_reaches_a_worker_connected_to_a(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    async with http(a, ALICE) as api_a, http(b, ALICE) as api_b:
        room = await Room(api_a).setup()
        job = await register_job(api_a, room.id, "Wanted")
        worker = await connect(a, ALICE)
        try:
            answer = await worker.call(
                "join_job_room", {"job_name": job["full_name"], "worker_id": job["worker_id"]}
            )
            assert answer == {"status": "ok"}
            task = await submit(api_b, room.id, job["full_name"])
            available = await worker.wait_for("task_available", task_id=task["id"])
            assert available == {
                "job_name": job["full_name"],
                "room_id": room.id,
                "task_id": task["id"],
            }
        finally:
            await worker.disconnect()


async def test_long_poll_on_a_wakes_when_b_completes_the_task(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    async with http(a, ALICE) as api_a, http(b, ALICE) as api_b:
        room = Room(api_a)
        task, _ = await _running_task(api_b, room)
        poll = asyncio.create_task(api_a.get(f"/tasks/{task['id']}", headers={"Prefer": WAIT}))
        await waiting(a, f"task:{task['id']}")
        await set_status(api_b, task["id"], "completed")
        completed_at = time.monotonic()
        response = await asyncio.wait_for(poll, 10)
        assert time.monotonic() - completed_at < WAKE_BOUND
        assert response.status_code == 200
        assert response.headers["Preference-Applied"] == WAIT
        assert response.json()["status"] == "completed"


async def test_claim_long_poll_on_a_returns_a_task_submitted_through_b(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    async with http(a, ALICE) as api_a, http(b, ALICE) as api_b:
        room = Room(api_a)
        job = await register_job(api_a, room.id, "Queued")
        poll = asyncio.create_task(
            api_a.post(
                "/tasks/claim", json={"worker_id": job["worker_id"]}, headers={"Prefer": WAIT}
            )
        )
        await waiting(a, f"job:{job['full_name']}")
        task = await submit(api_b, room.id, job["full_name"])
        submitted_at = time.monotonic()
        response = await asyncio.wait_for(poll, 10)
        assert time.monotonic() - submitted_at < WAKE_BOUND
        assert response.status_code == 200
        assert response.headers["Preference-Applied"] == WAIT
        claimed = response.json()["task"]
        assert claimed is not None
        assert claimed["id"] == task["id"]
        assert claimed["status"] == "claimed"
        assert claimed["worker_id"] == job["worker_id"]


async def test_claim_long_poll_on_a_follows_jobs_registered_and_the_deletion_through_b(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    async with http(a, ALICE) as api_a, http(b, ALICE) as api_b:
        room = Room(api_a)
        job = await register_job(api_a, room.id, "First")
        worker_id = job["worker_id"]
        body = {"worker_id": worker_id}
        poll = asyncio.create_task(api_a.post("/tasks/claim", json=body, headers={"Prefer": WAIT}))
        await waiting(a, f"worker:{worker_id}")
        # A job registered through B after the long-poll on A began.
        later = await register_job(api_b, room.id, "Later", worker_id=worker_id)
        await waiting(a, f"job:{later['full_name']}")
        task = await submit(api_b, room.id, later["full_name"])
        submitted_at = time.monotonic()
        response = await asyncio.wait_for(poll, 10)
        assert time.monotonic() - submitted_at < WAKE_BOUND
        assert response.json()["task"]["id"] == task["id"]

        poll = asyncio.create_task(api_a.post("/tasks/claim", json=body, headers={"Prefer": WAIT}))
        await waiting(a, f"worker:{worker_id}")
        assert (await api_b.delete(f"/workers/{worker_id}")).status_code == 204
        deleted_at = time.monotonic()
        response = await asyncio.wait_for(poll, 10)
        assert time.monotonic() - deleted_at < WAKE_BOUND
        assert response.status_code == 404
        assert response.json()["type"] == "/v1/problems/worker-not-found"


async def test_claim_long_poll_answers_null_when_nothing_is_submitted(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, _ = pair
    async with http(a, ALICE) as api_a:
        job = await register_job(api_a, Room(api_a).id, "Quiet")
        started = time.monotonic()
        response = await api_a.post(
            "/tasks/claim", json={"worker_id": job["worker_id"]}, headers={"Prefer": "wait=0.5"}
        )
        assert response.json() == {"task": None}
        assert response.headers["Preference-Applied"] == "wait=0.5"
        assert 0.5 <= time.monotonic() - started < 0.5 + WAKE_BOUND


async def test_two_sweepers_fail_each_killed_workers_task_once(
    postgres_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Both processes sweep every 0.2 s: each stale task is failed once, no cycle fails."""
    a, b = start_pair(
        postgres_url,
        redis_url,
        redis_prefix,
        tmp_path,
        ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS="2",
        ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS="0.2",
    )
    processes: list[WorkerProcess] = []
    try:
        async with http(a, ALICE) as api_a:
            frontend = await connect(a, ALICE)
            try:
                room = Room(api_a)
                await frontend.join_room(room.id)
                processes = [WorkerProcess(s, room.id, "http") for s in (a, b)]
                infos = await asyncio.gather(*(p.ready() for p in processes))
                for process in processes:
                    process.kill()
                for info in infos:
                    failed = await frontend.wait_for(
                        "task_status_event", within=6, id=info["task_id"], status="failed"
                    )
                    assert failed["error"] == "Worker disconnected"
                # Both processes swept the same stale workers within the same 0.2 s: a second
                # failure would be emitted (through Redis) before this later barrier event.
                barrier = await Room(api_a, room.id).setup()
                await barrier.flush(frontend)
                for info in infos:
                    fails = frontend.matching(
                        "task_status_event", id=info["task_id"], status="failed"
                    )
                    assert len(fails) == 1
            finally:
                await frontend.disconnect()
    finally:
        for process in processes:
            process.close()
        a.stop()
        b.stop()
    for log in ("a.log", "b.log"):
        text = (tmp_path / log).read_text()
        assert "Sweeper cycle failed" not in text
        assert "Traceback" not in text


async def _read_task(api: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """GET the task; once more if the kept-alive connection was closed as it was reused
    (the server closes idle connections after its keep-alive timeout)."""
    try:
        response = await api.get(f"/tasks/{task_id}")
    except httpx.ReadError:
        response = await api.get(f"/tasks/{task_id}")
    result: dict[str, Any] = response.json()
    return result
