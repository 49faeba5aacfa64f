"""Wire behaviour the reference's clients rely on (issue 10), over real HTTP and Socket.IO.

One server per database, with the internal test extensions registered.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api import Api, http
from tests.support.databases import DATABASES
from tests.support.internal_jobs import GREET, WAIT
from tests.support.names import ADMIN, ALICE, BOB, assert_problem, new_room, unique
from tests.support.realtime import EventLog, Room, connect
from tests.support.server import ServerProcess, serve
from tests.support.waiting import waiting

# Without a notification a claim long-poll wakes only on its 5 s safety re-check.
WAKE_BOUND = 1.0
HASH = "0" * 64


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"conformance-{request.param}")
    with serve(request.param, workdir, JOBLIB_TEST_INTERNAL="1") as instance:
        yield instance


async def register_provider(api: Api, room: str, token: str, **extra: object) -> dict[str, Any]:
    body = {"category": "files", "name": "Files", "schema": {}, "content_type": "text/plain"}
    response = await api.request("PUT", f"/rooms/{room}/providers", token, json={**body, **extra})
    assert response.status_code in (200, 201), response.text
    provider: dict[str, Any] = response.json()
    return provider


async def upload(api: Api, provider_id: str, token: str, digest: str | None) -> httpx.Response:
    headers = {"X-Request-Hash": digest} if digest is not None else None
    return await api.request(
        "POST", f"/providers/{provider_id}/results", token, content=b"x", headers=headers
    )


async def test_result_upload_checks_provider_and_caller_before_the_hash(api: Api) -> None:
    """Item 1: the reference's SDK stops on the 404 of a provider that is gone."""
    provider = await register_provider(api, new_room(), ALICE)
    gone = str(uuid.uuid4())
    assert_problem(await upload(api, gone, ALICE, "not-a-hash"), 404, "provider-not-found")
    assert_problem(await upload(api, gone, ALICE, None), 404, "provider-not-found")
    assert_problem(await upload(api, provider["id"], BOB, "not-a-hash"), 403, "forbidden")
    assert_problem(await upload(api, provider["id"], ALICE, "not-a-hash"), 422)
    assert_problem(await upload(api, provider["id"], ALICE, None), 422)
    # A well-formed hash nobody asked for is refused last (issue 11: uploads answer reads).
    assert_problem(
        await upload(api, provider["id"], ALICE, HASH), 409, "provider-request-not-pending"
    )


async def test_a_superuser_overwrites_another_users_provider(api: Api) -> None:
    """Item 2: 200 for a superuser, 403 for an ordinary user."""
    room = new_room()
    provider = await register_provider(api, room, ALICE)
    refused = await api.request(
        "PUT",
        f"/rooms/{room}/providers",
        BOB,
        json={"category": "files", "name": "Files", "schema": {}, "content_type": "text/plain"},
    )
    assert_problem(refused, 403, "forbidden")
    response = await api.request(
        "PUT",
        f"/rooms/{room}/providers",
        ADMIN,
        json={"category": "files", "name": "Files", "schema": {"v": 2}, "content_type": "a/b"},
    )
    assert response.status_code == 200, response.text
    overwritten = response.json()
    assert overwritten["id"] == provider["id"]
    assert overwritten["schema"] == {"v": 2}
    assert overwritten["worker_id"] != provider["worker_id"]
    info = await api.request("GET", f"/rooms/{room}/providers/{provider['full_name']}/info")
    assert info.json()["schema"] == {"v": 2}
    # The registration is the superuser's now: its old owner no longer uploads to it.
    assert_problem(await upload(api, provider["id"], ALICE, HASH), 403, "forbidden")
    # The superuser passes the owner check; only the pending-read rule (issue 11) is left.
    assert_problem(
        await upload(api, provider["id"], ADMIN, HASH), 409, "provider-request-not-pending"
    )


async def test_preference_applied_only_when_the_task_read_waited(api: Api) -> None:
    """Item 3: a task already terminal answers at once, without the header."""
    room = new_room()
    job = await api.register(room, unique())
    task = await api.submit(room, job["full_name"])
    waited = await api.request("GET", f"/tasks/{task['id']}", headers={"Prefer": "wait=0.2"})
    assert waited.headers["Preference-Applied"] == "wait=0.2"
    assert waited.json()["status"] == "pending"
    assert (await api.patch_task(task["id"], "cancelled")).status_code == 200
    started = time.monotonic()
    terminal = await api.request("GET", f"/tasks/{task['id']}", headers={"Prefer": "wait=10"})
    assert time.monotonic() - started < WAKE_BOUND
    assert terminal.json()["status"] == "cancelled"
    assert "Preference-Applied" not in terminal.headers


async def test_reactivating_a_soft_deleted_job_answers_201(api: Api) -> None:
    """Item 4."""
    room = new_room()
    name = unique()
    first = await api.request(
        "PUT", f"/rooms/{room}/jobs", json={"category": "modifiers", "name": name, "schema": {}}
    )
    assert first.status_code == 201, first.text
    # Its only worker leaves with nothing pending: the job is soft-deleted.
    deleted = await api.request("DELETE", f"/workers/{first.json()['worker_id']}")
    assert deleted.status_code == 204
    gone = await api.request("GET", f"/rooms/{room}/jobs/{first.json()['full_name']}")
    assert_problem(gone, 404, "job-not-found")
    again = await api.request(
        "PUT",
        f"/rooms/{room}/jobs",
        json={"category": "modifiers", "name": name, "schema": {"n": 1}},
    )
    assert again.status_code == 201, again.text
    assert again.json()["schema"] == {"n": 1}
    same = await api.request(
        "PUT",
        f"/rooms/{room}/jobs",
        json={"category": "modifiers", "name": name, "schema": {"n": 1}},
    )
    assert same.status_code == 200, same.text


async def orphaned_job_with_pending(
    api: Api, room: str, count: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A job whose only worker was deleted while ``count`` tasks were pending."""
    job = await api.register(room, unique())
    submitted = [await api.submit(room, job["full_name"]) for _ in range(count)]
    assert (await api.request("DELETE", f"/workers/{job['worker_id']}")).status_code == 204
    # Pending tasks keep it listed (the worker cleanup only soft-deletes jobs with none).
    listed = await api.request("GET", f"/rooms/{room}/jobs")
    assert job["full_name"] in [j["full_name"] for j in listed.json()["items"]]
    return job, submitted


async def jobs_listed(api: Api, room: str) -> list[str]:
    response = await api.request("GET", f"/rooms/{room}/jobs")
    return [j["full_name"] for j in response.json()["items"]]


@pytest.mark.parametrize(("target", "token"), [("cancelled", ALICE), ("claimed", ADMIN)])
async def test_the_last_pending_task_leaving_pending_soft_deletes_a_job_without_workers(
    api: Api, server: ServerProcess, target: str, token: str
) -> None:
    """Item 5: cancelled by its submitter or claimed by a superuser, whatever the path."""
    async with http(server, ALICE) as client:
        room = await Room(client).setup()
        follower = await connect(server, ALICE)
        try:
            await follower.join_room(room.id)
            job, (first, second) = await orphaned_job_with_pending(api, room.id, 2)
            await room.flush(follower)
            before = len(follower.matching("jobs_invalidate"))
            assert (await api.patch_task(first["id"], target, token)).status_code == 200
            assert job["full_name"] in await jobs_listed(api, room.id)
            assert (await api.patch_task(second["id"], target, token)).status_code == 200
            assert job["full_name"] not in await jobs_listed(api, room.id)
            refused = await api.request(
                "POST", f"/rooms/{room.id}/tasks/{job['full_name']}", json={"payload": {}}
            )
            assert_problem(refused, 404, "job-not-found")
            await room.flush(follower)
            assert len(follower.matching("jobs_invalidate")) == before + 1
        finally:
            await follower.disconnect()


async def test_a_job_with_a_worker_stays_when_its_queue_empties(api: Api) -> None:
    room = new_room()
    job = await api.register(room, unique())
    task = await api.submit(room, job["full_name"])
    assert (await api.patch_task(task["id"], "cancelled")).status_code == 200
    assert job["full_name"] in await jobs_listed(api, room)


async def test_cancelling_an_internal_task_never_soft_deletes_its_job(
    api: Api, tmp_path: Path
) -> None:
    room = new_room()
    release = tmp_path / "release"
    response = await api.request(
        "POST",
        f"/rooms/{room}/tasks/{WAIT}",
        json={"payload": {"path": str(release), "timeout": 10}},
    )
    assert response.status_code == 202, response.text
    try:
        cancelled = await api.patch_task(response.json()["id"], "cancelled", ADMIN)
        assert cancelled.status_code == 200, cancelled.text
        assert WAIT in await jobs_listed(api, room)
    finally:
        release.touch()


async def statuses_of(log: EventLog, task_id: str) -> list[str]:
    return [e["status"] for e in log.matching("task_status_event", id=task_id)]


async def test_an_internal_submit_emits_one_status_event(server: ServerProcess) -> None:
    """Item 6: claimed, not pending then claimed in the same request."""
    async with http(server, ALICE) as client:
        room = await Room(client).setup()
        follower = await connect(server, ALICE)
        try:
            await follower.join_room(room.id)
            response = await client.post(
                f"/rooms/{room.id}/tasks/{GREET}", json={"payload": {"name": "x"}}
            )
            assert response.status_code == 202, response.text
            task_id = response.json()["id"]
            await follower.wait_for("task_status_event", id=task_id, status="completed")
            assert await statuses_of(follower, task_id) == ["claimed", "running", "completed"]
        finally:
            await follower.disconnect()


async def test_error_details_carry_the_references_wording(api: Api) -> None:
    """Item 7."""
    room = new_room()
    for path in (f"/rooms/{room}/jobs/no-colons", f"/rooms/{room}/tasks/a:b"):
        method = "GET" if "/jobs/" in path else "POST"
        response = await api.request(method, path, json={"payload": {}})
        body = assert_problem(response, 404, "job-not-found")
        assert body["detail"].startswith("Invalid job name format"), body
    for bad in ("a@b", "a:b"):
        body = assert_problem(
            await api.request("GET", f"/rooms/{bad}/jobs"), 400, "invalid-room-id"
        )
        assert "invalid characters" in body["detail"], body


async def test_a_task_id_that_is_not_a_uuid_is_422(api: Api) -> None:
    """Item 8: as the reference's UUID path parameter."""
    for method, body in (("GET", None), ("PATCH", {"status": "cancelled"})):
        response = await api.request(method, "/tasks/not-a-uuid", json=body)
        problem = assert_problem(response, 422, "validation-error")
        assert problem["errors"][0]["loc"] == ["path", "task_id"]
    waited = await api.request("GET", "/tasks/not-a-uuid", headers={"Prefer": "wait=5"})
    assert_problem(waited, 422, "validation-error")
    # A UUID in another spelling names the same task.
    room = new_room()
    job = await api.register(room, unique())
    task = await api.submit(room, job["full_name"])
    assert (await api.task(task["id"].upper()))["id"] == task["id"]


def claim_poll(api: Api, worker_id: str, wait: float = 10) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(
        api.request(
            "POST",
            "/tasks/claim",
            json={"worker_id": worker_id},
            headers={"Prefer": f"wait={wait:g}"},
        )
    )


async def test_a_claim_long_poll_wakes_for_a_job_registered_after_it_began(
    api: Api, server: ServerProcess
) -> None:
    """Item 9."""
    room = new_room()
    first = await api.register(room, unique())
    worker_id = first["worker_id"]
    poll = claim_poll(api, worker_id)
    await waiting(server, f"worker:{worker_id}")
    second = await api.register(room, unique(), worker_id=worker_id)
    await waiting(server, f"job:{second['full_name']}")
    task = await api.submit(room, second["full_name"], BOB)
    submitted = time.monotonic()
    response = await asyncio.wait_for(poll, 10)
    assert time.monotonic() - submitted < WAKE_BOUND
    assert response.json()["task"]["id"] == task["id"]


async def test_deleting_a_worker_ends_its_claim_long_poll(api: Api, server: ServerProcess) -> None:
    """Item 11: DELETE /workers answers the worker's open long-poll with 404 at once."""
    job = await api.register(new_room(), unique())
    poll = claim_poll(api, job["worker_id"], wait=30)
    await waiting(server, f"worker:{job['worker_id']}")
    assert (await api.request("DELETE", f"/workers/{job['worker_id']}")).status_code == 204
    deleted = time.monotonic()
    response = await asyncio.wait_for(poll, 10)
    assert time.monotonic() - deleted < WAKE_BOUND
    assert_problem(response, 404, "worker-not-found")
