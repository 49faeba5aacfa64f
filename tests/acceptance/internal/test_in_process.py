"""``@internal`` jobs on the embedded default: taskiq ``InMemoryBroker`` in the server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api import post_task
from tests.support.fixtures import OpenRoomEvents
from tests.support.internal_jobs import ANSWER, EXPLODE, GREET, WAIT, Greet
from tests.support.internal_results import (
    ANSWER_CASES,
    ANSWER_FIELDS,
    SMALL_RESULTS,
    assert_ended_as,
)
from tests.support.names import ADMIN, ALICE, auth, new_room
from tests.support.server import ServerProcess, sqlite_env, start_internal_server
from tests.support.waiting import wait_terminal


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("internal-inprocess")
    instance = start_internal_server(sqlite_env(workdir, **SMALL_RESULTS), workdir)
    yield instance
    instance.stop()


async def test_submit_runs_to_completion_with_status_events(
    server: ServerProcess, http: httpx.AsyncClient, room_events: OpenRoomEvents, tmp_path: Path
) -> None:
    room = new_room()
    events = await room_events(server, room)
    out = tmp_path / "greeting.txt"

    response = await post_task(http, room, GREET, {"name": "ada", "out": str(out)})

    assert response.status_code == 202, response.text
    task = response.json()
    assert task["status"] == "claimed"
    assert task["worker_id"] is None
    assert task["job_name"] == GREET
    await events.wait_for_status(task["id"], "completed")
    assert events.statuses(task["id"]) == ["claimed", "running", "completed"]
    final = await wait_terminal(http, task["id"])
    assert final["status"] == "completed"
    assert final["error"] is None
    assert final["started_at"] is not None and final["completed_at"] is not None
    assert final["result"] == "hello ada"
    assert out.read_text() == "hello ada"


@pytest.mark.parametrize(
    ("job", "payload", "error"),
    [
        (EXPLODE, {"message": "kaboom"}, "RuntimeError: kaboom"),
        (GREET, {"name": ["not", "a", "string"]}, "ValidationError"),
    ],
    ids=["run-raises", "invalid-payload"],
)
async def test_failing_task_is_failed_with_the_error_text(
    server: ServerProcess,
    http: httpx.AsyncClient,
    room_events: OpenRoomEvents,
    job: str,
    payload: dict[str, Any],
    error: str,
) -> None:
    room = new_room()
    events = await room_events(server, room)

    task = (await post_task(http, room, job, payload)).json()

    final = await wait_terminal(http, task["id"])
    assert final["status"] == "failed"
    assert error in final["error"]
    await events.wait_for_status(task["id"], "failed")
    assert events.statuses(task["id"]) == ["claimed", "running", "failed"]
    failed_event = next(e for e in events.named("task_status_event") if e["status"] == "failed")
    assert error in failed_event["error"]


async def test_internal_jobs_are_listed_without_any_worker(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/rooms/{new_room()}/jobs", headers=auth(ALICE))

    assert response.status_code == 200
    internal = {j["full_name"]: j for j in response.json()["items"] if j["full_name"][0] == "@"}
    assert set(internal) >= {GREET, EXPLODE, WAIT}
    for name in (GREET, EXPLODE, WAIT):
        assert internal[name]["workers"] == []
    job = (await http.get(f"/rooms/{new_room()}/jobs/{GREET}", headers=auth(ALICE))).json()
    assert job["room_id"] == "@internal"
    assert job["schema"] == Greet.model_json_schema()


async def test_only_a_superuser_may_update_an_internal_task(
    server: ServerProcess, http: httpx.AsyncClient, room_events: OpenRoomEvents, tmp_path: Path
) -> None:
    room = new_room()
    events = await room_events(server, room)
    release = tmp_path / "release"
    task = (await post_task(http, room, WAIT, {"path": str(release)})).json()
    await events.wait_for_status(task["id"], "running")

    for token in (ALICE, "user:mallory"):
        refused = await http.patch(
            f"/tasks/{task['id']}", json={"status": "completed"}, headers=auth(token)
        )
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await http.get(f"/tasks/{task['id']}", headers=auth(ALICE))).json()[
        "status"
    ] == "running"

    release.touch()
    final = await wait_terminal(http, task["id"])
    assert final["status"] == "completed"


async def test_job_without_executor_is_503_and_writes_nothing(http: httpx.AsyncClient) -> None:
    # A superuser may register an @internal job by REST, but this server has no executor
    # for it, so a submit must be refused before any task row exists.
    name = f"Unserved{uuid.uuid4().hex[:8]}"
    registered = await http.put(
        "/rooms/@internal/jobs",
        json={"category": "modifiers", "name": name, "schema": {}},
        headers=auth(ADMIN),
    )
    assert registered.status_code == 201, registered.text
    room = new_room()

    response = await post_task(http, room, f"@internal:modifiers:{name}", {})

    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("internal-job-not-configured")
    listed = (await http.get(f"/rooms/{room}/tasks", headers=auth(ALICE))).json()
    assert listed["total"] == 0
    await http.delete(f"/workers/{registered.json()['worker_id']}", headers=auth(ADMIN))


async def test_no_task_available_is_sent_for_internal_tasks(
    server: ServerProcess, http: httpx.AsyncClient, room_events: OpenRoomEvents
) -> None:
    # A worker linked to the internal job (a superuser may do that) follows its job room:
    # an internal task must reach it only through task_status_event, never task_available.
    linked = await http.put(
        "/rooms/@internal/jobs",
        json={"category": "analysis", "name": "Greet", "schema": Greet.model_json_schema()},
        headers=auth(ADMIN),
    )
    assert linked.status_code == 200, linked.text
    worker_id = linked.json()["worker_id"]
    room = new_room()
    try:
        events = await room_events(server, room, token=ADMIN)
        ack = await events.call("join_job_room", {"job_name": GREET, "worker_id": worker_id})
        assert ack == {"status": "ok"}, ack

        task = (await post_task(http, room, GREET, {})).json()
        await events.wait_for_status(task["id"], "completed")

        assert events.named("task_available") == []
    finally:
        await http.delete(f"/workers/{worker_id}", headers=auth(ADMIN))


@pytest.mark.parametrize(ANSWER_FIELDS, ANSWER_CASES)
async def test_run_return_value_is_the_result(
    server: ServerProcess,
    http: httpx.AsyncClient,
    room_events: OpenRoomEvents,
    payload: dict[str, Any],
    status: str,
    result: object,
    error: str | None,
) -> None:
    room = new_room()
    events = await room_events(server, room)

    task = (await post_task(http, room, ANSWER, payload)).json()

    final = await wait_terminal(http, task["id"])
    assert_ended_as(final, status, result, error)
    await events.wait_for_status(task["id"], status)
    assert events.statuses(task["id"]) == ["claimed", "running", status]
