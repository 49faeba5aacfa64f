"""Redis goes away mid-test: provider reads and uploads answer 503 quickly, everything else
keeps working, and the app recovers by itself once Redis is back on the same port.

The server uses a throwaway ``redis-server`` of this test, never the machine's shared one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator

import httpx
import pytest

from tests.support.api import Api
from tests.support.names import assert_problem, new_room, request_hash, unique
from tests.support.processes import RedisServer
from tests.support.providers import SLACK, FakeProvider, ProviderServer
from tests.support.providers import serve_providers as serve_host

OPERATION_TIMEOUT = 1.0
# Provider endpoints must answer within this while Redis is down.
BOUND = OPERATION_TIMEOUT + SLACK
RECOVERY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as instance:
        yield instance


@pytest.fixture(scope="module")
def server(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProviderServer]:
    with serve_host(
        tmp_path_factory.mktemp("outage"),
        redis_url=redis_server.url,
        ZNDRAW_JOBLIB_REDIS_OPERATION_TIMEOUT_SECONDS=str(OPERATION_TIMEOUT),
    ) as instance:
        yield instance


@pytest.fixture
async def api(server: ProviderServer) -> AsyncIterator[Api[ProviderServer]]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(client, server)


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response and how many seconds it took."""
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def test_redis_outage_is_503_then_recovers(
    api: Api[ProviderServer], redis_server: RedisServer
) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    cached_params = {"frame": "cached"}

    async with FakeProvider(api.server, provider, answer=lambda r: r["params"].encode()) as fake:
        before = await api.read(room, provider["full_name"], cached_params, wait=10)
        assert before.status_code == 200, before.text

        # A reader already waiting when Redis dies is answered 503, not left to its full wait.
        fake.answer = None  # the provider stays silent, so that read keeps waiting
        waiting = asyncio.create_task(
            timed(api.read(room, provider["full_name"], {"frame": "waiting"}, wait=20))
        )
        await fake.wait_for_requests(2)
        redis_server.kill()

        response, elapsed = await waiting
        assert_problem(response, 503)
        assert elapsed < BOUND + 2, elapsed

        # Cache hit and miss alike: 503 problem+json with Retry-After, within the bound.
        for params in (cached_params, {"frame": "new"}):
            response, elapsed = await timed(api.read(room, provider["full_name"], params, wait=5))
            assert_problem(response, 503)
            assert "retry-after" in response.headers
            assert elapsed < BOUND, elapsed
        _, digest = request_hash({"frame": "upload"})
        response, elapsed = await timed(api.upload(provider["id"], digest, b"lost"))
        assert_problem(response, 503)
        assert elapsed < BOUND, elapsed

        # Everything that does not need the result backend keeps working.
        checks = {
            "health": api.client.get(api.server.origin + "/health"),
            "create worker": api.request("POST", "/workers"),
            "list workers": api.request("GET", "/workers"),
            "register job": api.request(
                "PUT",
                f"/rooms/{room}/jobs",
                json={"category": "modifiers", "name": unique("j"), "schema": {}},
            ),
            "register provider": api.put_provider(room, unique()),
            "list providers": api.request("GET", f"/rooms/{room}/providers"),
            "provider info": api.request(
                "GET", f"/rooms/{room}/providers/{provider['full_name']}/info"
            ),
        }
        results = {}
        for what, call in checks.items():
            response, elapsed = await timed(call)
            assert response.status_code in (200, 201), (what, response.text)
            assert elapsed < BOUND, (what, elapsed)
            results[what] = response.json()
        job = results["register job"]["full_name"]
        response, elapsed = await timed(
            api.request("POST", f"/rooms/{room}/tasks/{job}", json={"payload": {}})
        )
        assert response.status_code == 202, response.text
        assert elapsed < BOUND, elapsed
        task = await api.request("GET", f"/tasks/{response.json()['id']}")
        assert task.status_code == 200 and task.json()["status"] == "pending", task.text

        redis_server.start()

        # Recovery needs no restart: a fresh read is answered by the provider again. Each
        # attempt reads new parameters, so no in-flight lock of a lost request holds it up.
        fake.answer = lambda r: r["params"].encode()
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        attempt = 0
        while True:
            attempt += 1
            params = {"frame": f"after-{attempt}"}
            response = await api.read(room, provider["full_name"], params, wait=1)
            if response.status_code == 200:
                break
            assert response.status_code in (503, 504), response.text
            assert time.monotonic() < deadline, f"no recovery: {response.text}"
            await asyncio.sleep(0.1)
        canonical, _ = request_hash(params)
        assert response.content == canonical.encode()

        # Redis came back empty: the old cached result is gone, so it is asked for again.
        again = await api.read(room, provider["full_name"], cached_params, wait=10)
        assert again.status_code == 200, again.text
        hit = await api.read(room, provider["full_name"], cached_params)
        assert hit.status_code == 200 and hit.content == again.content
