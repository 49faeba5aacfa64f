"""Many claimers on one queue: every task claimed exactly once, no server error.

32 claimers (each its own worker, all registered on the same job) race for a queue of 2,000
tasks, on SQLite and on PostgreSQL, with one server process and with two sharing the database.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.databases import DATABASES, database
from tests.support.names import ALICE, new_room
from tests.support.server import ServerProcess, serve, server_env

TASKS = 2000
CLAIMERS = 32
SUBMITTERS = 8
AUTH = {"Authorization": f"Bearer {ALICE}"}
# These claimers never heartbeat and never start their tasks: keep the sweeper from removing
# them, and their claims from expiring, mid-race. On a loaded machine the race outlasted the
# default 30 s lease, and tasks whose lease ran out were claimed again (seen as duplicates).
NO_SWEEP = {
    "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": "3600",
    "ZNDRAW_JOBLIB_CLAIM_LEASE_SECONDS": "3600",
}


@pytest.fixture(params=DATABASES)
def one_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with serve(request.param, tmp_path, **NO_SWEEP) as server:
        yield [server]


@pytest.fixture(params=DATABASES)
def two_servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Two uvicorn processes on one database (SQLite: one file, locked across processes)."""
    with database(request.param, tmp_path) as url:
        env = server_env(url, **NO_SWEEP)
        with (
            ServerProcess(env, log_path=tmp_path / "a.log") as first,
            ServerProcess(env, log_path=tmp_path / "b.log") as second,
        ):
            yield [first, second]


class Tally:
    """Every answer's status code, so a single 5xx anywhere fails the test."""

    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()

    def check(self, response: httpx.Response, expected: int) -> httpx.Response:
        self.codes[response.status_code] += 1
        assert response.status_code == expected, response.text
        return response


async def all_of(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coroutines`` together; the first failure cancels the rest before it is raised.

    (``asyncio.gather`` would leave them running on a client about to be closed, and their
    sockets would be reported as leaked by whichever test runs next.)
    """
    async with asyncio.TaskGroup() as group:
        for coroutine in coroutines:
            group.create_task(coroutine)


async def race(servers: Sequence[ServerProcess]) -> None:
    room = new_room()
    tally = Tally()
    limits = httpx.Limits(max_connections=CLAIMERS + SUBMITTERS)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=AUTH) as client:
        name = "race"
        full_name = f"{room}:modifiers:{name}"
        workers: list[tuple[str, str]] = []  # (base URL, worker id)
        for i in range(CLAIMERS):
            base = servers[i % len(servers)].base
            worker = tally.check(await client.post(f"{base}/workers"), 201).json()["id"]
            body = {"category": "modifiers", "name": name, "schema": {}, "worker_id": worker}
            tally.check(
                await client.put(f"{base}/rooms/{room}/jobs", json=body), 201 if i == 0 else 200
            )
            workers.append((base, worker))

        submitted: list[str] = []
        claimed: list[str] = []

        async def submitter(index: int) -> None:
            base = servers[index % len(servers)].base
            for n in range(index, TASKS, SUBMITTERS):
                response = await client.post(
                    f"{base}/rooms/{room}/tasks/{full_name}", json={"payload": {"n": n}}
                )
                submitted.append(tally.check(response, 202).json()["id"])

        async def claimer(client: httpx.AsyncClient, base: str, worker: str) -> None:
            while True:
                response = await client.post(f"{base}/tasks/claim", json={"worker_id": worker})
                task = tally.check(response, 200).json()["task"]
                if task is None:  # the queue is drained: nothing is submitted any more
                    return
                assert task["worker_id"] == worker
                assert task["status"] == "claimed"
                claimed.append(task["id"])

        # The whole queue first, then every claimer at once on it: the race is claim
        # against claim, 32 wide, for the whole run.
        async with asyncio.timeout(120):
            await all_of([submitter(i) for i in range(SUBMITTERS)])
        # Fresh connections: the server may have closed the idle ones meanwhile (keep-alive
        # timeout), and a claim lost to such a race could not be told from a lost task.
        async with httpx.AsyncClient(timeout=60, limits=limits, headers=AUTH) as claimers:
            async with asyncio.timeout(120):
                await all_of([claimer(claimers, b, w) for b, w in workers])

        duplicates = [task for task, count in Counter(claimed).items() if count > 1]
        assert duplicates == []
        assert len(submitted) == TASKS
        assert sorted(claimed) == sorted(submitted)
        assert not [code for code in tally.codes if code >= 500], tally.codes

        # The database agrees: nothing left pending, every task claimed once.
        base = servers[0].base
        for status, total in (("pending", 0), ("claimed", TASKS)):
            response = await client.get(
                f"{base}/rooms/{room}/tasks", params={"status": status, "limit": 0}
            )
            assert response.json()["total"] == total


async def test_32_claimers_2000_tasks(one_server: list[ServerProcess]) -> None:
    await race(one_server)


async def test_32_claimers_two_processes_one_database(two_servers: list[ServerProcess]) -> None:
    await race(two_servers)
