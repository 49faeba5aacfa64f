"""Results, progress, same-status updates, versions and cancellation, over REST and Socket.IO."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.acceptance.results.conftest import RESULT_LIMIT
from tests.support.api import Api, http
from tests.support.names import ALICE, BOB, assert_problem, new_room
from tests.support.realtime import EventLog, Room, connect
from tests.support.server import BODY_LIMIT


async def running_task(api: Api, room: str, token: str = ALICE) -> tuple[str, dict[str, Any]]:
    """A worker of ``token``'s and one of its tasks, claimed and running."""
    worker_id = await api.create_worker(token)
    job = await api.register(room, "Job", token, worker_id=worker_id)
    submitted = await api.submit(room, job["full_name"], token)
    claimed = await api.claim(worker_id, token)
    assert claimed is not None and claimed["id"] == submitted["id"]
    response = await api.patch_task(submitted["id"], "running", token)
    assert response.status_code == 200, response.text
    return worker_id, response.json()


async def patch(api: Api, task_id: str, body: dict[str, Any], token: str = ALICE) -> Any:
    return await api.request("PATCH", f"/tasks/{task_id}", token, json=body)


async def test_result_is_stored_and_returned_by_read_and_long_poll(api: Api) -> None:
    room = new_room()
    _, task = await running_task(api, room)
    assert task["result"] is None
    waiter = asyncio.ensure_future(
        api.request("GET", f"/tasks/{task['id']}", headers={"Prefer": "wait=10"})
    )
    result = {"energy": -1.5, "frames": [1, 2, 3], "label": "ok"}
    done = await patch(api, task["id"], {"status": "completed", "result": result})
    assert done.status_code == 200, done.text
    assert done.json()["result"] == result
    polled = await waiter
    assert polled.status_code == 200 and polled.json()["status"] == "completed"
    assert polled.json()["result"] == result
    assert (await api.task(task["id"]))["result"] == result
    listed = await api.request("GET", f"/rooms/{room}/tasks")
    assert [t["result"] for t in listed.json()["items"]] == [result]


async def test_result_limit_answers_413_and_changes_nothing(api: Api) -> None:
    _, task = await running_task(api, new_room())
    # Larger than the ordinary body limit, within the result limit: room was left for it.
    fits = "x" * (RESULT_LIMIT - 2)
    assert len(fits) > BODY_LIMIT
    big = "x" * (RESULT_LIMIT - 1)  # 2 quotes make it one byte too large as JSON
    refused = await patch(api, task["id"], {"status": "completed", "result": big})
    body = assert_problem(refused, 413, "content-too-large")
    assert "max_task_result_bytes" in body["detail"]
    unchanged = await api.task(task["id"])
    assert unchanged["status"] == "running" and unchanged["result"] is None
    assert unchanged["version"] == task["version"]
    stored = await patch(api, task["id"], {"status": "completed", "result": fits})
    assert stored.status_code == 200, stored.text
    assert (await api.task(task["id"]))["result"] == fits


async def test_result_and_progress_only_with_their_status(api: Api) -> None:
    _, task = await running_task(api, new_room())
    for body in (
        {"status": "failed", "error": "x", "result": 1},
        {"status": "completed", "progress": 0.5},
        {"status": "running", "progress": 1.5},
        {"status": "running", "progress": -0.1},
        {"status": "running", "progress": 0.5, "progress_message": "m" * 501},
    ):
        assert_problem(await patch(api, task["id"], body), 422)
    assert (await api.task(task["id"]))["version"] == task["version"]


async def test_versions_grow_by_one_and_events_carry_them_in_order(api: Api) -> None:
    room_id = new_room()
    follower = await connect(api.server, ALICE)
    try:
        await follower.join_room(room_id)
        worker_id = await api.create_worker()
        job = await api.register(room_id, "Job", worker_id=worker_id)
        submitted = await api.submit(room_id, job["full_name"])
        assert submitted["version"] == 1
        claimed = await api.claim(worker_id)
        assert claimed is not None and claimed["version"] == 2
        running = (await api.patch_task(submitted["id"], "running")).json()
        assert running["version"] == 3
        for step in range(1, 4):
            progress = await patch(
                api,
                submitted["id"],
                {"status": "running", "progress": step / 4, "progress_message": f"s{step}"},
            )
            assert progress.status_code == 200, progress.text
            assert progress.json()["version"] == 3 + step
            assert progress.json()["progress"] == step / 4
        done = await patch(api, submitted["id"], {"status": "completed", "result": [1]})
        assert done.json()["version"] == 7
        await follower.wait_for("task_status_event", id=submitted["id"], status="completed")
        events = follower.matching("task_status_event", id=submitted["id"])
        assert [e["version"] for e in events] == [1, 2, 3, 4, 5, 6, 7]
        assert [e["progress"] for e in events[3:6]] == [0.25, 0.5, 0.75]
        assert [e["progress_message"] for e in events[3:6]] == ["s1", "s2", "s3"]
        # Events never carry the result itself.
        assert all("result" not in e for e in events)
    finally:
        await follower.disconnect()


async def test_same_status_update_answers_200_changes_and_emits_nothing(api: Api) -> None:
    room_id = new_room()
    follower = await connect(api.server, ALICE)
    rest = http(api.server, ALICE)
    try:
        await follower.join_room(room_id)
        barrier = await Room(rest, room_id).setup()
        _, task = await running_task(api, room_id)
        again = await api.patch_task(task["id"], "running")
        assert again.status_code == 200, again.text
        assert again.json() == task
        # Someone not allowed to update it still gets 403, not the task.
        assert_problem(await api.patch_task(task["id"], "running", BOB), 403)
        done = await patch(api, task["id"], {"status": "completed", "result": "r"})
        twice = await patch(api, task["id"], {"status": "completed", "result": "other"})
        assert twice.status_code == 200, twice.text
        assert twice.json() == done.json()
        assert twice.json()["result"] == "r"
        await barrier.flush(follower)
        events = follower.matching("task_status_event", id=task["id"])
        assert [e["version"] for e in events] == [1, 2, 3, 4]
        # The transition table is otherwise unchanged.
        assert_problem(await api.patch_task(task["id"], "running"), 409)
    finally:
        await follower.disconnect()
        await rest.aclose()


async def worker_socket(api: Api, worker_id: str, job_name: str, token: str = ALICE) -> EventLog:
    """A worker's Socket.IO connection that joined its job room (so it is the worker's)."""
    log = await connect(api.server, token)
    answer = await log.call("join_job_room", {"job_name": job_name, "worker_id": worker_id})
    assert answer == {"status": "ok"}, answer
    return log


@pytest.mark.parametrize("from_status", ["claimed", "running"])
async def test_cancel_reaches_only_the_claiming_workers_connection(
    api: Api, from_status: str
) -> None:
    room_id = new_room()
    worker_id = await api.create_worker()
    other_worker = await api.create_worker()
    job = await api.register(room_id, "Job", worker_id=worker_id)
    await api.register(room_id, "Job", worker_id=other_worker)
    worker = await worker_socket(api, worker_id, job["full_name"])
    other = await worker_socket(api, other_worker, job["full_name"])
    follower = await connect(api.server, ALICE)
    try:
        await follower.join_room(room_id)
        task = await api.submit(room_id, job["full_name"])
        assert (await api.claim_one(worker_id))["id"] == task["id"]
        if from_status == "running":
            assert (await api.patch_task(task["id"], "running")).status_code == 200
        cancelled = await api.patch_task(task["id"], "cancelled")
        assert cancelled.status_code == 200, cancelled.text
        told = await worker.wait_for("task_cancel_requested", task_id=task["id"])
        assert told == {"task_id": task["id"], "job_name": job["full_name"], "room_id": room_id}
        # The worker's final report still answers 409.
        assert_problem(await api.patch_task(task["id"], "completed"), 409)
        # Flush both other connections: a later event to the same rooms has arrived.
        await follower.wait_for("task_status_event", id=task["id"], status="cancelled")
        later = await api.submit(room_id, job["full_name"])
        await other.wait_for("task_available", task_id=later["id"])
        await follower.wait_for("task_status_event", id=later["id"])
        assert other.matching("task_cancel_requested") == []
        assert follower.matching("task_cancel_requested") == []
    finally:
        for log in (worker, other, follower):
            await log.disconnect()


async def test_cancel_of_a_pending_task_tells_no_worker(api: Api) -> None:
    room_id = new_room()
    worker_id = await api.create_worker()
    job = await api.register(room_id, "Job", worker_id=worker_id)
    worker = await worker_socket(api, worker_id, job["full_name"])
    try:
        task = await api.submit(room_id, job["full_name"])
        await worker.wait_for("task_available", task_id=task["id"])
        assert (await api.patch_task(task["id"], "cancelled")).status_code == 200
        later = await api.submit(room_id, job["full_name"])
        await worker.wait_for("task_available", task_id=later["id"])
        assert worker.matching("task_cancel_requested") == []
    finally:
        await worker.disconnect()


async def test_without_socketio_the_next_progress_answer_says_cancelled(api: Api) -> None:
    _, task = await running_task(api, new_room())
    # The submitter cancels (here the same user); the worker only uses REST.
    assert (await api.patch_task(task["id"], "cancelled")).status_code == 200
    answer = await patch(api, task["id"], {"status": "running", "progress": 0.5})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    assert answer.json()["progress"] is None
    # Without progress it is an ordinary transition, refused as before.
    assert_problem(await api.patch_task(task["id"], "running"), 409)
    assert_problem(await patch(api, task["id"], {"status": "completed", "result": 1}), 409)
    # Another user learns nothing from a progress report.
    assert_problem(await patch(api, task["id"], {"status": "running", "progress": 0.1}, BOB), 403)


async def test_progress_of_another_users_task_is_403(api: Api) -> None:
    _, task = await running_task(api, new_room())
    refused = await patch(api, task["id"], {"status": "running", "progress": 0.3}, BOB)
    assert_problem(refused, 403)
    assert (await api.task(task["id"]))["progress"] is None


async def test_first_progress_report_may_start_a_claimed_task(api: Api) -> None:
    room_id = new_room()
    worker_id = await api.create_worker()
    job = await api.register(room_id, "Job", worker_id=worker_id)
    task = await api.submit(room_id, job["full_name"])
    assert (await api.claim_one(worker_id))["id"] == task["id"]
    started = await patch(api, task["id"], {"status": "running", "progress": 0.0})
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "running"
    assert started.json()["progress"] == 0.0
    assert started.json()["started_at"] is not None
    assert json.loads(started.text)["version"] == 3
