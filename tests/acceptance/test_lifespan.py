"""The mounted app with and without the host running its lifespan."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import Api
from tests.support.databases import DATABASES
from tests.support.names import ALICE, new_room, unique
from tests.support.server import ServerProcess, serve


@pytest.fixture(scope="module", params=DATABASES)
def kind(request: pytest.FixtureRequest) -> str:
    database: str = request.param
    return database


@pytest.fixture
def lifespan_off(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve(kind, tmp_path_factory.mktemp(kind), JOBLIB_TEST_LIFESPAN="0") as server:
        yield server


@pytest.fixture
def lifespan_on(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve(kind, tmp_path_factory.mktemp(kind), JOBLIB_TEST_LIFESPAN="1") as server:
        yield server


async def started(client: httpx.AsyncClient, server: ServerProcess) -> bool:
    response = await client.get(server.origin + "/joblib-started")
    assert response.status_code == 200
    answer: bool = response.json()["started"]
    return answer


def assert_stops_gracefully(server: ServerProcess) -> None:
    """SIGTERM ends it within the grace period (uvicorn re-raises the signal once done)."""
    server.stop()
    assert server.process is not None
    assert server.process.returncode in (0, -signal.SIGTERM)


async def full_cycle(api: Api) -> None:
    room = new_room()
    job = await api.register(room, unique())
    task = await api.submit(room, job["full_name"])
    assert (await api.claim_one(job["worker_id"]))["id"] == task["id"]
    assert (await api.patch_task(task["id"], "running")).status_code == 200
    done = await api.patch_task(task["id"], "completed")
    assert done.json()["status"] == "completed"


async def test_without_host_lifespan_it_starts_on_first_request(
    lifespan_off: ServerProcess,
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(client, lifespan_off)
        # Host routes alone do not start it.
        assert (await client.get(lifespan_off.origin + "/health")).status_code == 200
        assert await started(client, lifespan_off) is False
        # Many first requests at once: one start-up, every request answered.
        responses = await asyncio.gather(
            *(api.request("POST", "/workers", ALICE) for _ in range(8))
        )
        assert [r.status_code for r in responses] == [201] * 8
        assert await started(client, lifespan_off) is True
        await full_cycle(api)
    assert_stops_gracefully(lifespan_off)
    # At WARNING, so that a plain uvicorn (no logging configured for the app) shows it.
    assert lifespan_off.log_path is not None
    log = lifespan_off.log_path.read_text()
    assert log.count("WARNING joblib_app.app: joblib-app is starting on its first request") == 1


async def test_with_host_lifespan_it_starts_at_boot(lifespan_on: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        assert await started(client, lifespan_on) is True
        await full_cycle(Api(client, lifespan_on))
    assert_stops_gracefully(lifespan_on)
