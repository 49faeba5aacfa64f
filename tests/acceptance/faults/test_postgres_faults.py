"""Issue 13: PostgreSQL connections terminated under a running server (``pg_terminate_backend``
on this test's own database only) never answer 500: a read is retried, a write answers 503
problem+json with ``Retry-After``; no task is lost, failed or run twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.api import http, register_job, task_counts
from tests.support.databases import postgres_database
from tests.support.names import new_room
from tests.support.server import ServerProcess
from tests.support.services import POSTGRES_ADMIN_URL

ALICE = "user:alice"
KILLS = 15
CYCLES = 40


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    workdir = tmp_path_factory.mktemp("pg-faults")
    with postgres_database() as url:
        with ServerProcess(
            {"JOBLIB_TEST_DATABASE_URL": url}, log_path=workdir / "server.log"
        ) as server:
            yield server, url.rsplit("/", 1)[1]


async def _kill_backends(database: str, times: int, statuses: list[int]) -> int:
    """Terminate every connection to ``database`` (ours only), ``times`` times."""
    admin = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    killed = 0
    try:
        async with admin.connect() as conn:
            for _ in range(times):
                # Wait for some traffic to hit, rather than killing an idle pool only.
                seen = len(statuses)
                async with asyncio.timeout(30):
                    while True:
                        if len(statuses) >= seen + 3:
                            break
                        await asyncio.sleep(0.01)
                result = await conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                )
                killed += result.scalar_one()
    finally:
        await admin.dispose()
    return killed


async def _send(
    api: httpx.AsyncClient, statuses: list[int], method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """The request, repeated after each 503 (which must say when to retry)."""
    while True:
        response = await api.request(method, url, **kwargs)
        statuses.append(response.status_code)
        if response.status_code != 503:
            return response
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "1"
        await asyncio.sleep(0.05)


async def test_terminated_connections_answer_no_500(pg_server: tuple[ServerProcess, str]) -> None:
    server, database = pg_server
    room = new_room()
    statuses: list[int] = []
    runs: dict[str, int] = {}
    async with http(server.base, ALICE) as api:
        job = await register_job(api, room, "Sturdy")
        name, worker = job["full_name"], job["worker_id"]

        async def cycles() -> None:
            for _ in range(CYCLES):
                await _send(
                    api, statuses, "POST", f"/rooms/{room}/tasks/{name}", json={"payload": {}}
                )
                claimed = await _send(
                    api, statuses, "POST", "/tasks/claim", json={"worker_id": worker}
                )
                task = claimed.json()["task"]
                if task is None:
                    continue
                runs[task["id"]] = runs.get(task["id"], 0) + 1
                for status in ("running", "completed"):
                    answer = await _send(
                        api, statuses, "PATCH", f"/tasks/{task['id']}", json={"status": status}
                    )
                    # A 503'd update may have committed: then its retry finds it done.
                    if answer.status_code == 409:
                        current = (await _send(api, statuses, "GET", f"/tasks/{task['id']}")).json()
                        assert current["status"] == status, answer.text
                    else:
                        assert answer.status_code == 200, answer.text
                await _send(api, statuses, "GET", f"/tasks/{task['id']}")

        killer = asyncio.create_task(_kill_backends(database, KILLS, statuses))
        await cycles()
        killed = await killer

        # Tasks whose submit answer was lost, or whose claim answer was: the lease or a
        # plain claim brings them in; everything ends completed.
        while True:
            left = await _send(api, statuses, "POST", "/tasks/claim", json={"worker_id": worker})
            task = left.json()["task"]
            if task is None:
                break
            runs[task["id"]] = runs.get(task["id"], 0) + 1
            for status in ("running", "completed"):
                await _send(api, statuses, "PATCH", f"/tasks/{task['id']}", json={"status": status})
        counts = await task_counts(api, room, runs)

    assert killed >= KILLS
    assert 500 not in statuses
    assert counts["failed"] == 0 and counts["lost"] == 0 and counts["duplicated"] == 0
    print(
        f"\n{killed} connections terminated; answers: {sorted(set(statuses))}, "
        f"{statuses.count(503)} of {len(statuses)} were 503"
    )
    log = _log(server)
    assert "Traceback" not in log, log[-3000:]


def _log(server: ServerProcess) -> str:
    assert server.log_path is not None
    return Path(server.log_path).read_text(errors="replace")
