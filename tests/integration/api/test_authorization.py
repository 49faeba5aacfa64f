"""Who may act on whose workers and tasks: alice owns, bob is another user, admin a superuser.

Served at the default mount, so ``Location`` is also checked against ``/v1/joblib``.
"""

from __future__ import annotations

import pytest

from tests.support.api import Api
from tests.support.names import ADMIN, ALICE, BOB, assert_problem, new_room, unique

# One app per module and database: its tests share the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


ACTORS = {"alice": ALICE, "bob": BOB, "admin": ADMIN}


async def alices_job(api: Api) -> tuple[str, str, str]:
    """``(room, job full name, worker id)``, all alice's."""
    room = new_room()
    job = await api.register(room, unique(), ALICE)
    return room, job["full_name"], job["worker_id"]


async def alices_claimed_task(api: Api) -> tuple[str, str]:
    """``(task id, worker id)``: a task alice submitted and her worker claimed."""
    room, job, worker = await alices_job(api)
    task = await api.submit(room, job, ALICE)
    assert (await api.claim_one(worker, ALICE))["id"] == task["id"]
    return task["id"], worker


@pytest.mark.parametrize(("actor", "status"), [("alice", 200), ("bob", 403), ("admin", 403)])
async def test_heartbeat_only_by_the_owner(api: Api, actor: str, status: int) -> None:
    worker = await api.create_worker(ALICE)
    response = await api.request("PATCH", f"/workers/{worker}", ACTORS[actor])
    assert response.status_code == status, response.text
    if status == 403:
        assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize(("actor", "status"), [("alice", 204), ("bob", 403), ("admin", 204)])
async def test_delete_worker_by_owner_or_superuser(api: Api, actor: str, status: int) -> None:
    room, job, worker = await alices_job(api)
    task = await api.submit(room, job, ALICE)
    await api.claim(worker, ALICE)
    response = await api.request("DELETE", f"/workers/{worker}", ACTORS[actor])
    assert response.status_code == status, response.text
    after = await api.task(task["id"])
    if status == 403:
        assert_problem(response, 403, "forbidden")
        assert after["status"] == "claimed"  # the refusal changed nothing
        assert (await api.request("PATCH", f"/workers/{worker}", ALICE)).status_code == 200
    else:
        # Claimed, never started: back in its queue (issue 13), not failed.
        assert after["status"] == "pending"
        assert after["worker_id"] is None


@pytest.mark.parametrize(("actor", "status"), [("alice", 200), ("bob", 403), ("admin", 403)])
async def test_claim_only_with_ones_own_worker(api: Api, actor: str, status: int) -> None:
    room, job, worker = await alices_job(api)
    task = await api.submit(room, job, ALICE)
    response = await api.request("POST", "/tasks/claim", ACTORS[actor], json={"worker_id": worker})
    assert response.status_code == status, response.text
    if status == 403:
        assert_problem(response, 403, "forbidden")
        assert (await api.task(task["id"]))["status"] == "pending"
    else:
        assert response.json()["task"]["id"] == task["id"]


@pytest.mark.parametrize(("actor", "status"), [("alice", 200), ("bob", 403), ("admin", 200)])
@pytest.mark.parametrize("target", ["running", "failed", "cancelled"])
async def test_update_claimed_task(api: Api, actor: str, status: int, target: str) -> None:
    task_id, _ = await alices_claimed_task(api)
    response = await api.patch_task(task_id, target, ACTORS[actor])
    assert response.status_code == status, response.text
    if status == 403:
        assert_problem(response, 403, "forbidden")
        assert (await api.task(task_id))["status"] == "claimed"
    else:
        assert response.json()["status"] == target


async def test_update_of_a_running_task_by_another_user(api: Api) -> None:
    task_id, _ = await alices_claimed_task(api)
    assert (await api.patch_task(task_id, "running", ALICE)).status_code == 200
    for target in ("completed", "failed", "cancelled"):
        assert_problem(await api.patch_task(task_id, target, BOB), 403, "forbidden")
    assert (await api.patch_task(task_id, "completed", ADMIN)).status_code == 200


async def test_the_submitter_may_cancel_a_pending_task(api: Api) -> None:
    """bob submits to alice's job: he may cancel it while pending, but not drive it."""
    room, job, worker = await alices_job(api)
    mine = await api.submit(room, job, BOB)
    response = await api.patch_task(mine["id"], "cancelled", BOB)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    other = await api.submit(room, job, BOB)
    assert_problem(await api.patch_task(other["id"], "claimed", BOB), 403, "forbidden")
    alices = await api.submit(room, job, ALICE)
    assert_problem(await api.patch_task(alices["id"], "cancelled", BOB), 403, "forbidden")
    assert (await api.task(alices["id"]))["status"] == "pending"
    # alice cannot cancel bob's pending task either: she is neither submitter nor claimer.
    assert_problem(await api.patch_task(other["id"], "cancelled", ALICE), 403, "forbidden")
    assert (await api.patch_task(other["id"], "cancelled", ADMIN)).status_code == 200
    assert (await api.claim_one(worker, ALICE))["id"] == alices["id"]


@pytest.mark.parametrize(("actor", "status"), [("alice", 201), ("bob", 404), ("admin", 404)])
async def test_register_with_someone_elses_worker(api: Api, actor: str, status: int) -> None:
    worker = await api.create_worker(ALICE)
    room = new_room()
    response = await api.request(
        "PUT",
        f"/rooms/{room}/jobs",
        ACTORS[actor],
        json={"category": "modifiers", "name": unique(), "schema": {}, "worker_id": worker},
    )
    assert response.status_code == status, response.text
    if status == 404:
        assert_problem(response, 404, "worker-not-found")


async def test_bobs_worker_never_gets_alices_tasks_through_her_job(api: Api) -> None:
    """Linking needs one's own worker, so bob cannot join alice's job with her worker; he
    can join with his own, and then claims from the same queue."""
    room, job, alice_worker = await alices_job(api)
    name = job.split(":")[2]
    bob_job = await api.register(room, name, BOB)
    assert sorted(bob_job["workers"]) == sorted([alice_worker, bob_job["worker_id"]])
    task = await api.submit(room, job, ALICE)
    claimed = await api.claim_one(bob_job["worker_id"], BOB)
    assert claimed["id"] == task["id"]
    assert_problem(await api.patch_task(task["id"], "running", ALICE), 403, "forbidden")
    assert (await api.patch_task(task["id"], "running", BOB)).status_code == 200


async def test_location_is_relative_to_the_default_mount(api: Api) -> None:
    room, job, _ = await alices_job(api)
    response = await api.request("POST", f"/rooms/{room}/tasks/{job}", json={"payload": {}})
    assert response.status_code == 202
    assert response.headers["location"] == f"/v1/joblib/tasks/{response.json()['id']}"
    assert response.headers["retry-after"] == "1"
