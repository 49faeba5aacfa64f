"""Cached provider results expire after ``provider_result_ttl_seconds`` (1 s here)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.support.api import Api
from tests.support.names import new_room, unique
from tests.support.providers import FakeProvider, ProviderServer

SERVER_SETTINGS = {"ZNDRAW_JOBLIB_PROVIDER_RESULT_TTL_SECONDS": "1"}
TTL = 1.0


async def test_a_cached_result_expires_after_its_ttl(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    params = {"frame": "1"}

    def numbered(request: dict[str, Any]) -> bytes:
        return json.dumps({"answer": len(fake.requests)}).encode()

    async with FakeProvider(api.server, provider, answer=numbered) as fake:
        first = await api.read(room, provider["full_name"], params, wait=10)
        assert first.json() == {"answer": 1}
        await fake.wait_for_uploads(1)
        stored_by = fake.upload_started[0]

        hit = await api.read(room, provider["full_name"], params, wait=10)
        if time.monotonic() - stored_by < TTL * 0.8:
            assert hit.json() == {"answer": 1}
            assert len(fake.requests) == 1

        # Re-read until the provider is asked again: that is when the result expired.
        deadline = time.monotonic() + 10
        while True:
            response = await api.read(room, provider["full_name"], params, wait=10)
            answered = time.monotonic()
            assert response.status_code == 200, response.text
            if response.json() != {"answer": 1}:
                break
            assert time.monotonic() < deadline, "the cached result never expired"
            await asyncio.sleep(0.05)
        assert response.json() == {"answer": 2}
        assert len(fake.requests) == 2
        # The server saw the result expired, so a TTL had passed since it was stored (which
        # was after the upload began) before the missing read was answered.
        assert answered - stored_by >= TTL, answered - stored_by
