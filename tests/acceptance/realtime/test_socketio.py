"""Socket.IO of the mounted sub-app: authentication, rooms, every event of the contract,
and the cleanup of a worker whose connection drops.

Served by real uvicorn at two mount paths; clients are real python-socketio AsyncClients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest
import socketio

from tests.support.api import claim, claim_one, http, register_job, set_status, submit
from tests.support.names import new_room
from tests.support.processes import WorkerProcess
from tests.support.realtime import EventLog, Room, connect
from tests.support.server import ServerProcess

ALICE = "user:alice"
BOB = "user:bob"
TASK_EVENT_FIELDS = {
    "id",
    "name",
    "room_id",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "queue_position",
    "worker_id",
    "error",
    # Additions (README, "Wire contract additions").
    "progress",
    "progress_message",
    "version",
}


@pytest.mark.parametrize("in_header", [False, True], ids=["auth-payload", "header"])
async def test_authenticated_connection_is_accepted(server: ServerProcess, in_header: bool) -> None:
    log = await connect(server, ALICE, in_header=in_header)
    try:
        assert log.client.connected
        await log.join_room(new_room())
    finally:
        await log.disconnect()


@pytest.mark.parametrize("token", [None, "not-a-known-token"], ids=["no-token", "bad-token"])
async def test_unauthenticated_connection_is_refused(
    server: ServerProcess, token: str | None
) -> None:
    log = EventLog()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await log.connect(server, token)
    assert not log.client.connected


async def test_joining_another_users_worker_rooms_is_refused(server: ServerProcess) -> None:
    room_id = new_room()
    async with http(server, ALICE) as alice_api:
        job = await register_job(alice_api, room_id, "Owned")
        worker_id = job["worker_id"]
        provider = await alice_api.put(
            f"/rooms/{room_id}/providers",
            json={
                "category": "files",
                "name": "Data",
                "schema": {},
                "content_type": "application/json",
                "worker_id": worker_id,
            },
        )
        assert provider.status_code == 201, provider.text
        other_job = await register_job(alice_api, room_id, "NotServedByIt")
    bob = await connect(server, BOB)
    alice = await connect(server, ALICE)
    try:
        for event, name_field, name in [
            ("join_job_room", "job_name", job["full_name"]),
            ("join_provider_room", "provider_name", provider.json()["full_name"]),
        ]:
            answer = await bob.call(event, {name_field: name, "worker_id": worker_id})
            assert answer["status"] == "error", answer
            assert worker_id in answer["detail"]
            assert (await bob.call(event, {name_field: name}))["status"] == "error"
            ok = await alice.call(event, {name_field: name, "worker_id": worker_id})
            assert ok == {"status": "ok"}
        # Alice's own worker, but a job another of her workers serves.
        refused = await alice.call(
            "join_job_room", {"job_name": other_job["full_name"], "worker_id": worker_id}
        )
        assert refused["status"] == "error", refused
        # Bob was refused, so his connection never took Alice's worker: dropping it must
        # not clean that worker up.
        await bob.disconnect()
        async with http(server, ALICE) as alice_api:
            assert (await alice_api.patch(f"/workers/{worker_id}")).status_code == 200
    finally:
        await bob.disconnect()
        await alice.disconnect()


async def test_join_room_is_guarded_by_can_read_room(server: ServerProcess) -> None:
    """The host (tests/support/host.py, JOBLIB_TEST_READ_GUARD=1) lets only superusers follow
    rooms named ``secret-*``."""
    alice = await connect(server, ALICE)
    admin = await connect(server, "admin")
    secret = "secret-" + new_room()
    try:
        refused = await alice.call("join_room", {"room_id": secret})
        assert refused["status"] == "error", refused
        assert (await alice.call("join_room", {"room_id": "bad:room"}))["status"] == "error"
        assert (await alice.call("join_room", {}))["status"] == "error"
        await admin.join_room(secret)
        async with http(server, "admin") as api:
            job = await register_job(api, secret, "Hidden")
            task = await submit(api, secret, job["full_name"])
        await admin.wait_for("task_status_event", id=task["id"])
        # Alice, refused, must not have received it: flush her own room's stream.
        async with http(server, ALICE) as api:
            room = await Room(api).setup()
            await alice.join_room(room.id)
            await room.flush(alice)
        assert alice.matching("task_status_event", room_id=secret) == []
    finally:
        await alice.disconnect()
        await admin.disconnect()


async def test_task_events_reach_their_rooms_once_with_contract_payloads(
    server: ServerProcess,
) -> None:
    async with http(server, ALICE) as api:
        room = await Room(api).setup()
        other = await Room(api).setup()
        job = await register_job(api, room.id, "Rotate")
        worker_id = job["worker_id"]
        frontend = await connect(server, ALICE)
        bystander = await connect(server, ALICE)
        worker = await connect(server, ALICE)
        idle_worker = await connect(server, ALICE)
        try:
            await frontend.join_room(room.id)
            await bystander.join_room(other.id)
            joined = await worker.call(
                "join_job_room", {"job_name": job["full_name"], "worker_id": worker_id}
            )
            assert joined == {"status": "ok"}

            task = await submit(api, room.id, job["full_name"])
            available = await worker.wait_for("task_available", task_id=task["id"])
            assert available == {
                "job_name": job["full_name"],
                "room_id": room.id,
                "task_id": task["id"],
            }
            pending = await frontend.wait_for("task_status_event", id=task["id"])
            assert set(pending) == TASK_EVENT_FIELDS
            assert pending["status"] == "pending"
            assert pending["queue_position"] == 1
            assert pending["name"] == job["full_name"]
            assert pending["room_id"] == room.id
            assert pending["worker_id"] is None

            claimed = await claim(api, worker_id)
            assert claimed is not None and claimed["id"] == task["id"]
            await set_status(api, task["id"], "running")
            done = await set_status(api, task["id"], "completed")

            completed = await frontend.wait_for(
                "task_status_event", id=task["id"], status="completed"
            )
            assert completed["worker_id"] == worker_id
            assert completed["queue_position"] is None
            assert completed["error"] is None
            assert completed["completed_at"] is not None and completed["started_at"] is not None
            # The event describes the committed row, as the REST answer does.
            assert completed["completed_at"][:19] == done["completed_at"][:19]

            await room.flush(frontend)
            await other.flush(bystander)
            statuses = [e["status"] for e in frontend.matching("task_status_event", id=task["id"])]
            assert statuses == ["pending", "claimed", "running", "completed"]
            assert len(worker.matching("task_available", task_id=task["id"])) == 1
            # task_available goes to the job's room only; status events to room:{room_id} only.
            assert frontend.matching("task_available") == []
            assert worker.matching("task_status_event", id=task["id"]) == []
            assert bystander.matching("task_status_event", id=task["id"]) == []
            assert idle_worker.events == []
        finally:
            for log in (frontend, bystander, worker, idle_worker):
                await log.disconnect()


async def test_jobs_and_providers_invalidate(server: ServerProcess) -> None:
    async with http(server, ALICE) as api:
        room = await Room(api).setup()
        other = await Room(api).setup()
        frontend = await connect(server, ALICE)
        bystander = await connect(server, ALICE)
        try:
            await frontend.join_room(room.id)
            await bystander.join_room(other.id)
            await room.flush(frontend)
            frontend.events.clear()

            await register_job(api, room.id, "Fresh")
            assert await frontend.wait_for("jobs_invalidate") == {}
            response = await api.put(
                f"/rooms/{room.id}/providers",
                json={"category": "files", "name": "F", "schema": {}, "content_type": "text/plain"},
            )
            assert response.status_code == 201, response.text
            await room.flush(frontend)
            assert frontend.matching("providers_invalidate") == [{}]
            removed = await api.delete(f"/providers/{response.json()['id']}")
            assert removed.status_code == 204
            await room.flush(frontend)
            assert frontend.matching("providers_invalidate") == [{}, {}]
            assert frontend.matching("jobs_invalidate") == [{}]

            await other.flush(bystander)
            assert bystander.matching("jobs_invalidate") == []
            assert bystander.matching("providers_invalidate") == []
        finally:
            await frontend.disconnect()
            await bystander.disconnect()


async def test_provider_request_and_result_ready(server: ServerProcess) -> None:
    async with http(server, ALICE) as api, http(server, BOB) as reader_api:
        room = await Room(api).setup()
        registered = await api.put(
            f"/rooms/{room.id}/providers",
            json={
                "category": "files",
                "name": "Frames",
                "schema": {},
                "content_type": "application/json",
            },
        )
        provider = registered.json()
        frontend = await connect(server, BOB)
        worker = await connect(server, ALICE)
        try:
            await frontend.join_room(room.id)
            joined = await worker.call(
                "join_provider_room",
                {"provider_name": provider["full_name"], "worker_id": provider["worker_id"]},
            )
            assert joined == {"status": "ok"}

            params = {"index": "3", "a": "x"}
            canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
            digest = hashlib.sha256(canonical.encode()).hexdigest()
            reads = [
                asyncio.create_task(
                    reader_api.get(
                        f"/rooms/{room.id}/providers/{provider['full_name']}",
                        params=params,
                        headers={"Prefer": "wait=10"},
                    )
                )
                for _ in range(3)
            ]
            request = await worker.wait_for("provider_request", request_id=digest)
            assert request == {
                "request_id": digest,
                "provider_name": provider["full_name"],
                "params": canonical,
            }
            uploaded = await api.post(
                f"/providers/{provider['id']}/results",
                content=b'{"frame": 3}',
                headers={"X-Request-Hash": digest},
            )
            assert uploaded.status_code == 204, uploaded.text
            ready = await frontend.wait_for("provider_result_ready", request_hash=digest)
            assert ready == {"provider_name": provider["full_name"], "request_hash": digest}
            for response in await asyncio.gather(*reads):
                assert response.status_code == 200
                assert response.content == b'{"frame": 3}'

            await room.flush(frontend)
            # Three concurrent reads, one request to the worker; one ready event.
            assert len(worker.matching("provider_request")) == 1
            assert len(frontend.matching("provider_result_ready")) == 1
            assert frontend.matching("provider_request") == []
        finally:
            await frontend.disconnect()
            await worker.disconnect()


async def _running_task_of_connected_worker(
    server: ServerProcess, room: Room, worker: EventLog
) -> tuple[str, str]:
    job = await register_job(room.api, room.id, "Fragile")
    answer = await worker.call(
        "join_job_room", {"job_name": job["full_name"], "worker_id": job["worker_id"]}
    )
    assert answer == {"status": "ok"}
    task = await submit(room.api, room.id, job["full_name"])
    assert (await claim_one(room.api, job["worker_id"]))["id"] == task["id"]
    await set_status(room.api, task["id"], "running")
    return job["worker_id"], task["id"]


async def test_closed_worker_connection_fails_its_running_task_at_once(
    server: ServerProcess,
) -> None:
    async with http(server, ALICE) as api:
        room = await Room(api).setup()
        frontend = await connect(server, ALICE)
        worker = await connect(server, ALICE)
        try:
            await frontend.join_room(room.id)
            worker_id, task_id = await _running_task_of_connected_worker(server, room, worker)
            started = time.monotonic()
            await worker.disconnect()
            failed = await frontend.wait_for(
                "task_status_event", within=1.0, id=task_id, status="failed"
            )
            assert time.monotonic() - started < 1.0
            assert failed["error"] == "Worker disconnected"
            assert failed["worker_id"] == worker_id
            # The job lost its only worker and has no pending task: soft-deleted, announced.
            await frontend.wait_for("jobs_invalidate", within=1.0)
            assert (await api.patch(f"/workers/{worker_id}")).status_code == 404
            task = (await api.get(f"/tasks/{task_id}")).json()
            assert task["status"] == "failed"
        finally:
            await frontend.disconnect()
            await worker.disconnect()


async def test_killed_worker_process_holding_a_socket_is_cleaned_up_at_once(
    server: ServerProcess,
) -> None:
    """SIGKILL closes the TCP connection without a Socket.IO goodbye: the server notices the
    dropped websocket and runs the cleanup, without waiting for the sweeper (30 s here)."""
    async with http(server, ALICE) as api:
        room = await Room(api).setup()
        frontend = await connect(server, ALICE)
        process = WorkerProcess(server, room.id, "socketio")
        try:
            await frontend.join_room(room.id)
            info = await process.ready()
            started = time.monotonic()
            process.kill()
            failed = await frontend.wait_for(
                "task_status_event", within=1.0, id=info["task_id"], status="failed"
            )
            assert time.monotonic() - started < 1.0
            assert failed["error"] == "Worker disconnected"
        finally:
            process.close()
            await frontend.disconnect()


async def test_leaving_rooms_stops_their_events(server: ServerProcess) -> None:
    async with http(server, ALICE) as api:
        room = await Room(api).setup()
        other = await Room(api).setup()
        job = await register_job(api, room.id, "Left")
        worker = await connect(server, ALICE)
        frontend = await connect(server, ALICE)
        try:
            await frontend.join_room(room.id)
            await frontend.join_room(other.id)
            # The worker also follows room:{room_id}, only to be flushed by the barrier.
            await worker.join_room(room.id)
            joined = {"job_name": job["full_name"], "worker_id": job["worker_id"]}
            assert await worker.call("join_job_room", joined) == {"status": "ok"}
            first = await submit(api, room.id, job["full_name"])
            await worker.wait_for("task_available", task_id=first["id"])

            assert await worker.call("leave_job_room", joined) == {"status": "ok"}
            assert await frontend.call("leave_room", {"room_id": room.id}) == {"status": "ok"}
            second = await submit(api, room.id, job["full_name"])
            await room.flush(worker)
            assert worker.matching("task_available", task_id=second["id"]) == []
            # The frontend left room; its stream is flushed through a room it still follows.
            await worker.wait_for("task_status_event", id=second["id"])
            await other.flush(frontend)
            assert frontend.matching("task_status_event", id=second["id"]) == []
        finally:
            await worker.disconnect()
            await frontend.disconnect()
