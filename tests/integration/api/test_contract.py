"""The REST contract, table by table, against the mounted app in process (httpx's
``ASGITransport``, the app's lifespan run).

The app is mounted at a non-default path here, so every ``Location`` is checked against the
mount rather than against ``/v1/joblib``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from tests.support.api import Api
from tests.support.names import ADMIN, ALICE, BOB, assert_problem, new_room, unique
from tests.support.server import BODY_LIMIT

# One app per module and database: its tests share the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")

MOUNT = "/custom/mount/joblib"
STATUSES = ("pending", "claimed", "running", "completed", "failed", "cancelled")
ALLOWED = {
    "pending": {"claimed", "cancelled"},
    "claimed": {"running", "failed", "cancelled"},
    "running": {"completed", "failed", "cancelled"},
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
}
TASK_KEYS = {
    "id",
    "job_name",
    "room_id",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "worker_id",
    "error",
    "payload",
    "queue_position",
    # Additions (README, "Wire contract additions"): optional for the reference's clients.
    "result",
    "progress",
    "progress_message",
    "version",
    # Beyond the reference (issue 13).
    "attempt",
}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def job_with_worker(api: Api, room: str, token: str = ALICE) -> tuple[str, str]:
    """A fresh job in ``room`` and the worker the server created for it."""
    job = await api.register(room, unique(), token)
    return job["full_name"], job["worker_id"]


# --- authentication and errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/workers"),
        ("GET", "/workers"),
        ("PATCH", "/workers/x"),
        ("DELETE", "/workers/x"),
        ("PUT", "/rooms/r/jobs"),
        ("GET", "/rooms/r/jobs"),
        ("GET", "/rooms/r/jobs/r:modifiers:x"),
        ("GET", "/rooms/r/jobs/r:modifiers:x/tasks"),
        ("GET", "/rooms/r/workers"),
        ("POST", "/rooms/r/tasks/r:modifiers:x"),
        ("POST", "/tasks/claim"),
        ("GET", "/tasks/x"),
        ("PATCH", "/tasks/x"),
        ("GET", "/rooms/r/tasks"),
    ],
)
@pytest.mark.parametrize("token", [None, "not-a-known-token"])
async def test_every_endpoint_needs_authentication(
    api: Api, method: str, path: str, token: str | None
) -> None:

    response = await api.request(method, path, token, json={})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")


async def test_validation_errors_are_problem_json(api: Api) -> None:
    body = assert_problem(await api.request("POST", "/tasks/claim", json={}), 422)
    assert body["type"] == "/v1/problems/validation-error"
    response = await api.request(
        "PUT", "/rooms/r/jobs", headers={"content-type": "application/json"}, content=b"{nope"
    )
    assert_problem(response, 422)
    response = await api.request("PATCH", "/tasks/x", json={"status": "exploded"})
    assert_problem(response, 422)
    response = await api.request(
        "PUT", "/rooms/r/jobs", json={"category": "modifiers", "name": "a:b", "schema": {}}
    )
    assert_problem(response, 422)


async def test_body_over_the_limit_is_413_problem(api: Api) -> None:
    room = new_room()
    job, _ = await job_with_worker(api, room)
    big = {"payload": {"blob": "x" * (BODY_LIMIT + 10)}}
    response = await api.request("POST", f"/rooms/{room}/tasks/{job}", json=big)
    assert_problem(response, 413)

    # No Content-Length: the limit must hold while streaming too.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b" " * (BODY_LIMIT // 2)

    response = await api.client.post(
        f"{api.base}/rooms/{room}/tasks/{job}",
        content=chunks(),
        headers=api.headers(ALICE, {"content-type": "application/json"}),
    )
    assert_problem(response, 413)
    listed = await api.request("GET", f"/rooms/{room}/tasks")
    assert listed.json()["total"] == 0
    # Just under the limit still passes.
    small = {"payload": {"blob": "x" * (BODY_LIMIT - 100)}}
    response = await api.request("POST", f"/rooms/{room}/tasks/{job}", json=small)
    assert response.status_code == 202, response.text


async def test_unknown_route_is_problem_json(api: Api) -> None:
    assert_problem(await api.request("GET", "/no-such-thing"), 404)


# --- workers -------------------------------------------------------------------------------


async def test_worker_create_heartbeat_delete(api: Api) -> None:
    response = await api.request("POST", "/workers")
    assert response.status_code == 201
    created = response.json()
    assert set(created) == {"id", "last_heartbeat"}
    worker_id = created["id"]

    response = await api.request("PATCH", f"/workers/{worker_id}")
    assert response.status_code == 200
    beat = response.json()
    assert beat["id"] == worker_id
    assert ts(beat["last_heartbeat"]) >= ts(created["last_heartbeat"])

    listed = await api.request("GET", "/workers", params={"limit": 500})
    assert listed.status_code == 200
    mine = [w for w in listed.json()["items"] if w["id"] == worker_id]
    assert mine and set(mine[0]) == {"id", "last_heartbeat", "job_count"}
    assert mine[0]["job_count"] == 0

    response = await api.request("DELETE", f"/workers/{worker_id}")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await api.request("PATCH", f"/workers/{worker_id}"), 404, "worker-not-found")
    assert_problem(await api.request("DELETE", f"/workers/{worker_id}"), 404, "worker-not-found")


async def test_worker_job_count_and_room_workers(api: Api) -> None:
    room, other = new_room(), new_room()
    worker = await api.create_worker()
    await api.register(room, unique(), worker_id=worker)
    await api.register(room, unique(), worker_id=worker)
    global_job = await api.register("@global", unique(), ADMIN)
    elsewhere = await api.register(other, unique())

    page = (await api.request("GET", f"/rooms/{room}/workers", params={"limit": 500})).json()
    ids = {w["id"]: w for w in page["items"]}
    assert ids[worker]["job_count"] == 2
    assert global_job["worker_id"] in ids  # @global jobs are served in every room
    assert elsewhere["worker_id"] not in ids
    assert page["total"] >= 2


# --- jobs ----------------------------------------------------------------------------------


async def test_register_new_then_idempotent_then_schema_conflict(api: Api) -> None:
    room, name = new_room(), unique()
    schema = {"type": "object", "properties": {"angle": {"type": "number"}}}
    response = await api.request(
        "PUT", f"/rooms/{room}/jobs", json={"category": "modifiers", "name": name, "schema": schema}
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert set(job) == {
        "id",
        "room_id",
        "category",
        "name",
        "full_name",
        "schema",
        "workers",
        "worker_id",
    }
    assert job["full_name"] == f"{room}:modifiers:{name}"
    assert (job["room_id"], job["category"], job["name"]) == (room, "modifiers", name)
    assert job["schema"] == schema
    assert job["workers"] == [job["worker_id"]]

    # The auto-created worker is the caller's: it heartbeats and claims.
    assert (await api.request("PATCH", f"/workers/{job['worker_id']}")).status_code == 200

    second = await api.create_worker()
    response = await api.request(
        "PUT",
        f"/rooms/{room}/jobs",
        json={"category": "modifiers", "name": name, "schema": schema, "worker_id": second},
    )
    assert response.status_code == 200, response.text
    again = response.json()
    assert again["id"] == job["id"]
    assert again["worker_id"] == second
    assert sorted(again["workers"]) == sorted([job["worker_id"], second])

    response = await api.request(
        "PUT",
        f"/rooms/{room}/jobs",
        json={"category": "modifiers", "name": name, "schema": {"other": True}},
    )
    assert_problem(response, 409, "schema-conflict")
    fetched = await api.request("GET", f"/rooms/{room}/jobs/{job['full_name']}")
    assert fetched.status_code == 200
    got = fetched.json()
    assert got["schema"] == schema
    assert set(got) == {"id", "room_id", "category", "name", "full_name", "schema", "workers"}


async def test_registration_rules(api: Api) -> None:
    room = new_room()
    body = {"category": "modifiers", "name": unique(), "schema": {}}
    for reserved in ("@global", "@internal"):
        response = await api.request("PUT", f"/rooms/{reserved}/jobs", json=body)
        assert_problem(response, 403, "forbidden")
    response = await api.request("PUT", "/rooms/@global/jobs", ADMIN, json=body)
    assert response.status_code == 201
    assert response.json()["full_name"] == f"@global:modifiers:{body['name']}"

    for category in ("selections", "analysis"):
        await api.register(room, unique(), category=category)
    response = await api.request(
        "PUT", f"/rooms/{room}/jobs", json={**body, "category": "frobnicators"}
    )
    assert_problem(response, 400, "invalid-category")

    for bad_room in ("a:b", "@elsewhere", "x@y"):
        response = await api.request("PUT", f"/rooms/{bad_room}/jobs", json=body)
        assert_problem(response, 400, "invalid-room-id")
        response = await api.request("GET", f"/rooms/{bad_room}/jobs")
        assert_problem(response, 400, "invalid-room-id")

    bobs = await api.create_worker(BOB)
    response = await api.request("PUT", f"/rooms/{room}/jobs", json={**body, "worker_id": bobs})
    assert_problem(response, 404, "worker-not-found")
    response = await api.request(
        "PUT", f"/rooms/{room}/jobs", json={**body, "worker_id": "no-such-worker"}
    )
    assert_problem(response, 404, "worker-not-found")
    # Neither refusal created the job.
    response = await api.request("GET", f"/rooms/{room}/jobs/{room}:modifiers:{body['name']}")
    assert_problem(response, 404, "job-not-found")


async def test_get_job_visibility(api: Api) -> None:
    room, other = new_room(), new_room()
    job, _ = await job_with_worker(api, room)
    global_job = (await api.register("@global", unique(), ADMIN))["full_name"]

    assert (await api.request("GET", f"/rooms/{room}/jobs/{job}")).status_code == 200
    assert_problem(await api.request("GET", f"/rooms/{other}/jobs/{job}"), 404, "job-not-found")
    for viewer in (room, other):
        response = await api.request("GET", f"/rooms/{viewer}/jobs/{global_job}")
        assert response.status_code == 200
    for missing in (f"{room}:modifiers:nope", "not-a-full-name", f"{room}::x"):
        response = await api.request("GET", f"/rooms/{room}/jobs/{missing}")
        assert_problem(response, 404, "job-not-found")


async def test_job_listing_visibility_order_and_soft_delete(api: Api) -> None:
    room, other = new_room(), new_room()
    first = await api.register(room, unique())
    second = await api.register(room, unique())
    gone = await api.register(room, unique())
    foreign = await api.register(other, unique())
    global_job = await api.register("@global", unique(), ADMIN)
    internal_job = await api.register("@internal", unique(), ADMIN)
    assert (await api.request("DELETE", f"/workers/{gone['worker_id']}")).status_code == 204

    response = await api.request("GET", f"/rooms/{room}/jobs", params={"limit": 500})
    assert response.status_code == 200
    page = response.json()
    names = [j["full_name"] for j in page["items"]]
    assert set(page["items"][0]) == {"full_name", "category", "name", "workers"}
    assert first["full_name"] in names and second["full_name"] in names
    assert names.index(second["full_name"]) < names.index(first["full_name"])  # newest first
    assert global_job["full_name"] in names
    assert internal_job["full_name"] in names
    assert gone["full_name"] not in names
    assert foreign["full_name"] not in names
    assert all(n.split(":")[0] in (room, "@global", "@internal") for n in names)
    assert page["total"] == len(names)
    listed = {j["full_name"]: j for j in page["items"]}
    assert listed[first["full_name"]]["workers"] == [first["worker_id"]]

    # @global and @internal are seen from any room.
    page = (await api.request("GET", f"/rooms/{other}/jobs", params={"limit": 500})).json()
    seen = [j["full_name"] for j in page["items"]]
    assert global_job["full_name"] in seen and internal_job["full_name"] in seen
    response = await api.request("GET", f"/rooms/{other}/jobs/{internal_job['full_name']}")
    assert response.status_code == 200


async def test_soft_deleted_job_is_reactivated_with_the_new_schema(api: Api) -> None:
    room, name = new_room(), unique()
    job = await api.register(room, name, schema={"v": 1})
    assert (await api.request("DELETE", f"/workers/{job['worker_id']}")).status_code == 204
    full = job["full_name"]
    assert_problem(await api.request("GET", f"/rooms/{room}/jobs/{full}"), 404, "job-not-found")
    response = await api.request("POST", f"/rooms/{room}/tasks/{full}", json={"payload": {}})
    assert_problem(response, 404, "job-not-found")

    again = await api.register(room, name, schema={"v": 2})
    assert again["id"] == job["id"]  # never hard-deleted: the same row comes back
    assert again["schema"] == {"v": 2}
    assert again["workers"] == [again["worker_id"]]
    fetched = (await api.request("GET", f"/rooms/{room}/jobs/{full}")).json()
    assert fetched["schema"] == {"v": 2}
    await api.submit(room, full)


# --- tasks ---------------------------------------------------------------------------------


async def test_submit_answers_202_location_and_retry_after(api: Api) -> None:
    room = new_room()
    job, _ = await job_with_worker(api, room)
    response = await api.request(
        "POST", f"/rooms/{room}/tasks/{job}", json={"payload": {"n": 1, "s": "é"}}
    )
    assert response.status_code == 202, response.text
    task = response.json()
    assert set(task) == TASK_KEYS
    assert task["status"] == "pending"
    assert task["job_name"] == job and task["room_id"] == room
    assert task["payload"] == {"n": 1, "s": "é"}
    assert task["queue_position"] == 1
    assert task["worker_id"] is None and task["error"] is None
    assert task["started_at"] is None and task["completed_at"] is None
    assert response.headers["location"] == f"{MOUNT}/tasks/{task['id']}"
    assert response.headers["retry-after"] == "1"

    followed = await api.client.get(
        api.server.origin + response.headers["location"], headers=api.headers(ALICE)
    )
    assert followed.status_code == 200
    assert followed.json() == task
    # A body without a payload is an empty one.
    response = await api.request("POST", f"/rooms/{room}/tasks/{job}", json={})
    assert response.status_code == 202
    assert response.json()["payload"] == {}


async def test_submit_across_rooms(api: Api) -> None:
    room, other = new_room(), new_room()
    job, _ = await job_with_worker(api, room)
    response = await api.request("POST", f"/rooms/{other}/tasks/{job}", json={"payload": {}})
    assert_problem(response, 404, "job-not-found")
    for missing in (f"{room}:modifiers:nope", "garbage"):
        response = await api.request("POST", f"/rooms/{room}/tasks/{missing}", json={})
        assert_problem(response, 404, "job-not-found")
    response = await api.request("POST", "/rooms/a:b/tasks/x", json={})
    assert_problem(response, 400, "invalid-room-id")

    global_job = (await api.register("@global", unique(), ADMIN))["full_name"]
    for submitter_room in (room, other):
        task = await api.submit(submitter_room, global_job)
        assert task["room_id"] == submitter_room
        assert task["job_name"] == global_job


async def test_unknown_task(api: Api) -> None:
    unknown = str(uuid.uuid4())
    assert_problem(await api.request("GET", f"/tasks/{unknown}"), 404, "task-not-found")
    response = await api.patch_task(unknown, "cancelled")
    assert_problem(response, 404, "task-not-found")


async def test_claim_is_fifo_and_limited_to_the_workers_jobs(api: Api) -> None:
    room = new_room()
    job, worker = await job_with_worker(api, room)
    other_job, other_worker = await job_with_worker(api, room)
    submitted = [(await api.submit(room, job, payload={"i": i}))["id"] for i in range(3)]
    foreign = (await api.submit(room, other_job))["id"]

    claimed = []
    for _ in range(3):
        task = await api.claim(worker)
        assert task is not None
        assert task["status"] == "claimed"
        assert task["worker_id"] == worker
        assert task["queue_position"] is None
        claimed.append(task["id"])
    assert claimed == submitted
    assert await api.claim(worker) is None
    assert (await api.claim_one(other_worker))["id"] == foreign

    response = await api.request("POST", "/tasks/claim", json={"worker_id": "no-such-worker"})
    assert_problem(response, 404, "worker-not-found")


async def test_claim_takes_the_oldest_across_all_the_workers_jobs(api: Api) -> None:
    room = new_room()
    worker = await api.create_worker()
    a = (await api.register(room, unique(), worker_id=worker))["full_name"]
    b = (await api.register(room, unique(), worker_id=worker))["full_name"]
    order = [(await api.submit(room, name))["id"] for name in (b, a, b)]
    got = [(await api.claim_one(worker))["id"] for _ in order]
    assert got == order


async def test_queue_positions(api: Api) -> None:
    room = new_room()
    job, worker = await job_with_worker(api, room)
    other_job, _ = await job_with_worker(api, room)
    ids = [(await api.submit(room, job))["id"] for _ in range(3)]
    other = await api.submit(room, other_job)
    assert other["queue_position"] == 1  # positions are per job
    assert [(await api.task(t))["queue_position"] for t in ids] == [1, 2, 3]

    await api.claim(worker)
    assert (await api.task(ids[0]))["queue_position"] is None
    assert [(await api.task(t))["queue_position"] for t in ids[1:]] == [1, 2]
    response = await api.patch_task(ids[1], "cancelled")
    assert response.status_code == 200
    assert response.json()["queue_position"] is None
    assert (await api.task(ids[2]))["queue_position"] == 1

    listed = (await api.request("GET", f"/rooms/{room}/jobs/{job}/tasks")).json()
    positions = {t["id"]: t["queue_position"] for t in listed["items"]}
    assert positions == {ids[0]: None, ids[1]: None, ids[2]: 1}


async def task_in_state(api: Api, state: str) -> str:
    """A fresh task of a fresh job, moved to ``state`` the regular way."""
    room = new_room()
    job, worker = await job_with_worker(api, room)
    task = await api.submit(room, job)
    task_id: str = task["id"]
    if state == "pending":
        return task_id
    if state == "cancelled":
        assert (await api.patch_task(task_id, "cancelled")).status_code == 200
        return task_id
    assert (await api.claim_one(worker))["id"] == task_id
    path = {
        "claimed": [],
        "running": ["running"],
        "completed": ["running", "completed"],
        "failed": ["failed"],
    }[state]
    for step in path:
        assert (await api.patch_task(task_id, step)).status_code == 200
    return task_id


@pytest.mark.parametrize("current", STATUSES)
async def test_transition_table(api: Api, current: str) -> None:
    """Every (from, to) pair: the allowed ones answer 200, the rest 409, state unchanged.

    A superuser drives the changes, so only the table decides. The status the task already
    has answers 200 with the task as it is (an idempotent update, issue 13 item 2).
    """
    for target in STATUSES:
        task_id = await task_in_state(api, current)
        response = await api.patch_task(task_id, target, ADMIN)
        if target == current:
            assert response.status_code == 200, (current, target, response.text)
            assert response.json() == await api.task(task_id)
        elif target in ALLOWED[current]:
            assert response.status_code == 200, (current, target, response.text)
            assert response.json()["status"] == target
        else:
            assert_problem(response, 409, "invalid-task-transition")
            assert (await api.task(task_id))["status"] == current


async def test_timestamps_and_error(api: Api) -> None:
    room = new_room()
    job, worker = await job_with_worker(api, room)
    task = await api.submit(room, job)
    created = ts(task["created_at"])
    claimed = await api.claim_one(worker)
    assert claimed["started_at"] is None and claimed["completed_at"] is None

    running = (await api.patch_task(task["id"], "running")).json()
    assert ts(running["started_at"]) >= created
    assert running["completed_at"] is None
    done = (await api.patch_task(task["id"], "completed")).json()
    assert done["started_at"] == running["started_at"]
    assert ts(done["completed_at"]) >= ts(done["started_at"])
    assert done["error"] is None

    failing = await api.submit(room, job)
    await api.claim(worker)
    failed = (await api.patch_task(failing["id"], "failed", error="boom")).json()
    assert failed["status"] == "failed" and failed["error"] == "boom"
    assert failed["started_at"] is None
    assert ts(failed["completed_at"]) >= ts(failed["created_at"])

    cancelled = await api.submit(room, job)
    gone = (await api.patch_task(cancelled["id"], "cancelled")).json()
    assert gone["completed_at"] is not None and gone["started_at"] is None
    assert gone["worker_id"] is None


async def test_task_pages_filters_and_limits(api: Api) -> None:
    room, other = new_room(), new_room()
    job, worker = await job_with_worker(api, room)
    global_job = (await api.register("@global", unique(), ADMIN))["full_name"]
    ids = [(await api.submit(room, job, payload={"i": i}))["id"] for i in range(5)]
    global_here = (await api.submit(room, global_job))["id"]
    global_there = (await api.submit(other, global_job))["id"]
    await api.claim(worker)

    page = (await api.request("GET", f"/rooms/{room}/tasks")).json()
    assert (page["total"], page["limit"], page["offset"]) == (6, 50, 0)
    assert [t["id"] for t in page["items"]] == [global_here, *reversed(ids)]  # newest first

    page = (
        await api.request("GET", f"/rooms/{room}/tasks", params={"limit": 2, "offset": 1})
    ).json()
    assert (page["total"], page["limit"], page["offset"]) == (6, 2, 1)
    assert [t["id"] for t in page["items"]] == [ids[4], ids[3]]
    page = (await api.request("GET", f"/rooms/{room}/tasks", params={"limit": 0})).json()
    assert page["items"] == [] and page["total"] == 6
    page = (await api.request("GET", f"/rooms/{room}/tasks", params={"offset": 100})).json()
    assert page["items"] == [] and page["total"] == 6

    page = (await api.request("GET", f"/rooms/{room}/tasks", params={"status": "claimed"})).json()
    assert [t["id"] for t in page["items"]] == [ids[0]] and page["total"] == 1

    page = (await api.request("GET", f"/rooms/{room}/jobs/{job}/tasks")).json()
    assert page["total"] == 5
    page = (
        await api.request("GET", f"/rooms/{room}/jobs/{job}/tasks", params={"status": "pending"})
    ).json()
    assert page["total"] == 4
    assert [t["queue_position"] for t in page["items"]] == [4, 3, 2, 1]
    page = (await api.request("GET", f"/rooms/{other}/jobs/{global_job}/tasks")).json()
    assert [t["id"] for t in page["items"]] == [global_there]
    response = await api.request("GET", f"/rooms/{other}/jobs/{job}/tasks")
    assert_problem(response, 404, "job-not-found")

    for path in (
        f"/rooms/{room}/tasks",
        f"/rooms/{room}/jobs",
        "/workers",
        f"/rooms/{room}/workers",
        f"/rooms/{room}/jobs/{job}/tasks",
    ):
        response = await api.request("GET", path, params={"limit": 500})
        assert response.status_code == 200, path
        for params in ({"limit": 501}, {"limit": -1}, {"offset": -1}):
            assert_problem(await api.request("GET", path, params=params), 422)
    response = await api.request("GET", f"/rooms/{room}/tasks", params={"status": "bogus"})
    assert_problem(response, 422)


async def test_long_poll_task_returns_when_terminal(api: Api) -> None:
    room = new_room()
    job, worker = await job_with_worker(api, room)
    task = await api.submit(room, job)

    async def finish() -> None:
        await api.claim(worker)
        assert (await api.patch_task(task["id"], "running")).status_code == 200
        assert (await api.patch_task(task["id"], "completed")).status_code == 200

    poll = asyncio.create_task(
        api.request("GET", f"/tasks/{task['id']}", headers={"Prefer": "wait=20"})
    )
    finisher = asyncio.create_task(finish())
    response = await asyncio.wait_for(poll, timeout=15)
    await finisher
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=20"
    assert response.json()["status"] == "completed"

    # A task that stays pending answers at the end of the wait, still pending.
    pending = await api.submit(room, job)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await api.request("GET", f"/tasks/{pending['id']}", headers={"Prefer": "wait=1"})
    assert response.json()["status"] == "pending"
    assert loop.time() - started >= 0.9


async def test_long_poll_claim_wakes_on_submit(api: Api) -> None:
    room = new_room()
    job, worker = await job_with_worker(api, room)
    claim = asyncio.create_task(
        api.request(
            "POST", "/tasks/claim", json={"worker_id": worker}, headers={"Prefer": "wait=20"}
        )
    )
    task = await api.submit(room, job)
    loop = asyncio.get_running_loop()
    submitted = loop.time()
    response = await asyncio.wait_for(claim, timeout=15)
    # Well before the server's 5 s safety re-check: the submit woke the parked claim (or
    # the claim arrived after the submit and took the task at once).
    assert loop.time() - submitted < 2.5
    assert response.status_code == 200
    assert response.json()["task"]["id"] == task["id"]


# --- worker cleanup ------------------------------------------------------------------------


async def test_deleting_a_worker_fails_its_tasks_and_soft_deletes_orphan_jobs(api: Api) -> None:
    room = new_room()
    worker = await api.create_worker()
    helper = await api.create_worker()
    busy = (await api.register(room, unique(), worker_id=worker))["full_name"]
    idle = (await api.register(room, unique(), worker_id=worker))["full_name"]
    shared = (await api.register(room, unique(), worker_id=worker))["full_name"]
    await api.register(room, shared.split(":")[2], worker_id=helper)
    queued = (await api.register(room, unique(), worker_id=worker))["full_name"]

    claimed = await api.submit(room, busy)
    running = await api.submit(room, busy)
    done = await api.submit(room, busy)
    assert (await api.claim_one(worker))["id"] == claimed["id"]
    assert (await api.claim_one(worker))["id"] == running["id"]
    assert (await api.claim_one(worker))["id"] == done["id"]
    assert (await api.patch_task(running["id"], "running")).status_code == 200
    await api.patch_task(done["id"], "running")
    assert (await api.patch_task(done["id"], "completed")).status_code == 200
    waiting = await api.submit(room, queued)

    assert (await api.request("DELETE", f"/workers/{worker}")).status_code == 204

    task = await api.task(running["id"])
    assert task["status"] == "failed"
    assert task["error"] == "Worker disconnected"
    assert task["completed_at"] is not None
    # Claimed but never started: it goes back to its queue (issue 13), using no attempt.
    task = await api.task(claimed["id"])
    assert task["status"] == "pending"
    assert task["worker_id"] is None
    assert task["attempt"] == 1
    assert (await api.task(done["id"]))["status"] == "completed"
    assert (await api.task(waiting["id"]))["status"] == "pending"

    page = (await api.request("GET", f"/rooms/{room}/jobs", params={"limit": 500})).json()
    listed = {j["full_name"]: j for j in page["items"]}
    assert idle not in listed  # no worker, nothing pending
    assert listed[shared]["workers"] == [helper]
    assert listed[queued]["workers"] == []  # a pending task keeps it
    assert listed[busy]["workers"] == []  # so does the requeued one
    assert_problem(await api.request("GET", f"/rooms/{room}/jobs/{idle}"), 404)
    workers = (await api.request("GET", "/workers", params={"limit": 500})).json()["items"]
    assert worker not in {w["id"] for w in workers}


async def test_openapi_documents_every_task_route(api: Api) -> None:
    """The per-task routes are plain ASGI routes; the OpenAPI document still has them."""
    response = await api.request("GET", "/openapi.json", None)
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "post" in paths["/rooms/{room_id}/tasks/{job_full_name}"]
    assert "post" in paths["/tasks/claim"]
    assert {"get", "patch"} <= set(paths["/tasks/{task_id}"])
    submit = paths["/rooms/{room_id}/tasks/{job_full_name}"]["post"]
    assert "202" in submit["responses"]
    schemas = response.json()["components"]["schemas"]
    assert {"TaskOut", "TaskSubmit", "ClaimRequest", "ClaimResponse", "TaskUpdate"} <= set(schemas)


async def test_unsupported_method_on_a_task_route_is_405(api: Api) -> None:
    response = await api.request("DELETE", "/tasks/some-task")
    body = assert_problem(response, 405)
    assert body["status"] == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH"}


async def test_head_of_a_task_is_answered_like_get(api: Api) -> None:
    room = new_room()
    job = await api.register(room, "head")
    task = await api.submit(room, job["full_name"])
    response = await api.request("HEAD", f"/tasks/{task['id']}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == "application/json"
