"""A provider that cannot answer uploads a problem: every waiting reader gets 502 at once."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx

from tests.support.api import Api, ask_pending
from tests.support.names import assert_problem, new_room, request_hash, unique
from tests.support.providers import FakeProvider, ProviderServer

READERS = 20


def problem(detail: str) -> bytes:
    return json.dumps({"title": "Provider error", "status": 502, "detail": detail}).encode()


async def upload_problem(
    api: Api[ProviderServer], provider: dict[str, Any], digest: str, detail: str
) -> httpx.Response:
    return await api.request(
        "POST",
        f"/providers/{provider['id']}/results",
        content=problem(detail),
        headers={"X-Request-Hash": digest, "Content-Type": "application/problem+json"},
    )


async def key_waiters(api: Api[ProviderServer], key: str, count: int, within: float = 10.0) -> None:
    """Return once ``count`` reads of the server wait for result-backend ``key``."""
    async with asyncio.timeout(within):
        while True:
            answer = await api.client.get(f"{api.server.origin}/joblib-key-waiters/{key}")
            if answer.json()["count"] >= count:
                return
            await asyncio.sleep(0.005)


async def test_problem_reaches_every_waiting_reader_at_once_and_is_not_cached(
    api: Api[ProviderServer],
) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    name = provider["full_name"]
    params = {"frame": "9"}
    _, digest = request_hash(params)
    # A provider that never answers by itself: the test uploads the problem.
    async with FakeProvider(api.server, provider) as fake:
        limits = httpx.Limits(max_connections=READERS + 5)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            reader = Api(client, api.server)
            arrived: list[float] = []

            async def read() -> httpx.Response:
                response = await reader.read(room, name, params, wait=1.4)
                arrived.append(time.monotonic())
                return response

            readers = [asyncio.ensure_future(read()) for _ in range(READERS)]
            await key_waiters(api, f"provider-error:{name}:{digest}", READERS)
            # With Redis, events leave from a background sender: wait for the one request.
            await fake.wait_for_requests(1)
            assert len(fake.requests) == 1
            sent = time.monotonic()
            uploaded = await upload_problem(api, provider, digest, "disk on fire")
            assert uploaded.status_code == 204, uploaded.text
            responses = await asyncio.gather(*readers)
        for response in responses:
            body = assert_problem(response, 502, "provider-error")
            assert body["detail"] == "disk on fire"
        latest = max(arrived) - sent
        # 100 ms on an idle machine; a machine busier than its cores stretches every step
        # (upload, 20 answers, this client reading them) alike.
        bound = 0.1 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
        assert latest < bound, f"the last reader got the error {latest * 1000:.0f} ms after it"

        # Not cached, and the in-flight lock is free: the next read asks the provider anew.
        again = asyncio.ensure_future(api.read(room, name, params, wait=10))
        await fake.wait_for_requests(2)
        await key_waiters(api, f"provider-result:{name}:{digest}", 1)
        answer = await api.upload(provider["id"], digest, b'{"ok": true}')
        assert answer.status_code == 204, answer.text
        assert (await again).json() == {"ok": True}


async def test_problem_upload_needs_a_detail_and_an_owner(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    # A read the server waits on, so that only the body is left to judge (issue 11).
    digest = await ask_pending(api, room, provider["full_name"], {})
    bad = await api.request(
        "POST",
        f"/providers/{provider['id']}/results",
        content=b"not json",
        headers={"X-Request-Hash": digest, "Content-Type": "application/problem+json"},
    )
    assert_problem(bad, 422)
    huge = await api.request(
        "POST",
        f"/providers/{provider['id']}/results",
        content=problem("x" * 70_000),
        headers={"X-Request-Hash": digest, "Content-Type": "application/problem+json"},
    )
    assert_problem(huge, 413)
    other = await api.request(
        "POST",
        f"/providers/{provider['id']}/results",
        "user:bob",
        content=problem("x"),
        headers={"X-Request-Hash": digest, "Content-Type": "application/problem+json"},
    )
    assert_problem(other, 403)
