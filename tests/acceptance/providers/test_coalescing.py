"""In-flight coalescing: any number of concurrent identical reads dispatch one request.

The waits here are long (a loaded machine may take seconds to serve 50 reads); the other
read tests keep the short defaults of :mod:`tests.support.providers`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.support.api import Api
from tests.support.names import new_room, unique
from tests.support.providers import FakeProvider, ProviderServer

SERVER_SETTINGS = {"ZNDRAW_JOBLIB_PROVIDER_LONG_POLL_MAX_SECONDS": "60"}
READS = 50


def echo(request: dict[str, Any]) -> bytes:
    return json.dumps({"params": json.loads(request["params"])}).encode()


async def read_many(
    api: Api[ProviderServer], room: str, full_name: str, params: dict[str, Any]
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=READS)
    async with httpx.AsyncClient(timeout=90, limits=limits) as client:
        reader = Api(client, api.server)
        return await asyncio.gather(
            *(reader.read(room, full_name, params, wait=60) for _ in range(READS))
        )


async def test_concurrent_identical_reads_coalesce(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    params = {"file": "big.h5", "frame": "7"}
    # A slow provider keeps the request in flight while the other reads arrive.
    async with FakeProvider(api.server, provider, answer=echo, delay=0.3) as fake:
        responses = await read_many(api, room, provider["full_name"], params)
        assert [r.status_code for r in responses] == [200] * READS, {r.text for r in responses}
        assert {r.content for r in responses} == {responses[0].content}
        assert responses[0].json() == {"params": params}
        # A later read with other parameters is dispatched after anything the reads caused.
        await api.read(room, provider["full_name"], {"sentinel": "1"}, wait=60)
        await fake.wait_for_requests(2)
        assert [json.loads(r["params"]) for r in fake.requests] == [params, {"sentinel": "1"}]
        assert [r.status_code for r in await fake.wait_for_uploads(2)] == [204, 204]


async def test_reads_racing_the_upload_never_dispatch_twice(api: Api[ProviderServer]) -> None:
    """A provider that answers at once uploads while the same wave of reads still arrives:
    a read that missed the cache just before the upload takes the lock just after it, and
    must find the result instead of asking again."""
    room = new_room()
    provider = await api.register_provider(room, unique())
    waves = [{"wave": str(i)} for i in range(4)]
    async with FakeProvider(api.server, provider, answer=echo) as fake:
        for params in waves:
            responses = await read_many(api, room, provider["full_name"], params)
            assert [r.status_code for r in responses] == [200] * READS, [
                r.text for r in responses if r.status_code != 200
            ]
            assert {r.content for r in responses} == {echo({"params": json.dumps(params)})}
        sentinel = await api.read(room, provider["full_name"], {"sentinel": "1"}, wait=60)
        assert sentinel.status_code == 200, sentinel.text
        await fake.wait_for_requests(len(waves) + 1)
        assert [json.loads(r["params"]) for r in fake.requests] == [*waves, {"sentinel": "1"}]
