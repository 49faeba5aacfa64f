"""The read path: cache hit and miss, coalescing, binary results, waiting and timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from tests.support.api import Api, ask_pending
from tests.support.names import ADMIN, BOB, assert_problem, new_room, request_hash, unique
from tests.support.providers import DEFAULT_WAIT, MAX_WAIT, SLACK, FakeProvider, ProviderServer
from tests.support.realtime import following


def echo(request: dict[str, Any]) -> bytes:
    """A JSON answer that names the request it answers."""
    return json.dumps({"params": json.loads(request["params"])}).encode()


async def test_miss_dispatches_one_request_then_hits_the_cache(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    params = {"path": "/data/a.xyz", "frame": "3"}
    canonical, digest = request_hash(params)
    async with (
        following(api.server, room) as frontend,
        FakeProvider(api.server, provider, answer=echo) as fake,
    ):
        miss = await api.read(room, provider["full_name"], params, wait=10)
        assert miss.status_code == 200, miss.text
        assert miss.headers["content-type"].startswith("application/json")
        assert miss.json() == {"params": params}
        assert fake.requests == [
            {"request_id": digest, "provider_name": provider["full_name"], "params": canonical}
        ]
        assert [r.status_code for r in await fake.wait_for_uploads(1)] == [204]
        ready = await frontend.wait_for_count("provider_result_ready")
        assert ready == [{"provider_name": provider["full_name"], "request_hash": digest}]

        # Same parameters in another order, read by another user: the cached bytes.
        hit = await api.read(room, provider["full_name"], dict(reversed(params.items())), BOB)
        assert hit.status_code == 200, hit.text
        assert hit.content == miss.content

        # Requests reach the provider in order: had the hit dispatched one, it came first.
        other = await api.read(room, provider["full_name"], {"path": "/data/b.xyz"}, wait=10)
        assert other.status_code == 200, other.text
        await fake.wait_for_requests(2)
        assert [r["params"] for r in fake.requests] == [canonical, '{"path":"/data/b.xyz"}']


async def test_a_global_provider_is_read_from_any_room(api: Api[ProviderServer]) -> None:
    provider = await api.register_provider("@global", unique(), ADMIN)
    async with FakeProvider(api.server, provider, token=ADMIN, answer=echo):
        for room in (new_room(), new_room()):
            response = await api.read(room, provider["full_name"], {"q": "1"}, wait=10)
            assert response.status_code == 200, response.text
            assert response.json() == {"params": {"q": "1"}}


async def test_preference_applied_only_when_the_read_waited(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    async with FakeProvider(api.server, provider, answer=echo):
        miss = await api.read(room, provider["full_name"], {"n": "1"}, wait=10)
        assert miss.status_code == 200, miss.text
        # The wait asked for, capped by the settings, as the task read answers it.
        assert miss.headers["Preference-Applied"] == f"wait={MAX_WAIT:g}"
        hit = await api.read(room, provider["full_name"], {"n": "1"}, wait=10)
        assert hit.status_code == 200, hit.text
        assert "Preference-Applied" not in hit.headers
        unasked = await api.read(room, provider["full_name"], {"n": "2"})
        assert unasked.status_code == 200, unasked.text
        assert "Preference-Applied" not in unasked.headers


async def test_a_five_megabyte_binary_result_round_trips(api: Api[ProviderServer]) -> None:
    room = new_room()
    content_type = "application/x-custom-binary"
    provider = await api.register_provider(room, unique(), content_type=content_type)
    payload = os.urandom(5 * 1024 * 1024)
    async with FakeProvider(api.server, provider, answer=lambda _: payload) as fake:
        miss = await api.read(room, provider["full_name"], {"frame": "0"}, wait=20)
        assert miss.status_code == 200, miss.text[:200]
        assert miss.headers["content-type"] == content_type
        assert miss.content == payload
        hit = await api.read(room, provider["full_name"], {"frame": "0"})
        assert hit.headers["content-type"] == content_type
        assert hit.content == payload
        assert len(fake.requests) == 1


async def test_timeout_is_504_with_retry_after(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    async with FakeProvider(api.server, provider) as silent:
        started = time.monotonic()
        response = await api.read(room, provider["full_name"], {"x": "1"}, wait=0.5)
        elapsed = time.monotonic() - started
        assert_problem(response, 504, "provider-timeout")
        assert response.headers["retry-after"] == "2"
        assert 0.5 <= elapsed < 0.5 + SLACK, elapsed
        await silent.wait_for_requests(1)


async def test_the_wait_defaults_and_is_capped_by_settings(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    async with FakeProvider(api.server, provider):
        started = time.monotonic()
        default = await api.read(room, provider["full_name"], {"x": "default"})
        elapsed = time.monotonic() - started
        body = assert_problem(default, 504, "provider-timeout")
        assert f"within {DEFAULT_WAIT:g} s" in body["detail"]
        assert DEFAULT_WAIT <= elapsed < DEFAULT_WAIT + SLACK, elapsed

        started = time.monotonic()
        capped = await api.read(room, provider["full_name"], {"x": "capped"}, wait=30)
        elapsed = time.monotonic() - started
        body = assert_problem(capped, 504, "provider-timeout")
        assert f"within {MAX_WAIT:g} s" in body["detail"]
        assert MAX_WAIT <= elapsed < MAX_WAIT + SLACK, elapsed


async def test_a_late_answer_serves_the_next_read(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    params = {"slow": "yes"}
    async with FakeProvider(api.server, provider) as fake:
        timed_out = await api.read(room, provider["full_name"], params, wait=0.2)
        assert_problem(timed_out, 504, "provider-timeout")
        [request] = await fake.wait_for_requests(1)
        upload = await api.upload(provider["id"], request["request_id"], b'{"late":true}')
        assert upload.status_code == 204, upload.text
        response = await api.read(room, provider["full_name"], params, wait=0)
        assert response.status_code == 200, response.text
        assert response.json() == {"late": True}


async def test_a_waiting_read_is_woken_by_the_upload(api: Api[ProviderServer]) -> None:
    """The reader is already waiting when the (manual) upload lands."""
    room = new_room()
    provider = await api.register_provider(room, unique(), content_type="text/plain")
    async with FakeProvider(api.server, provider) as fake:
        read = asyncio.create_task(api.read(room, provider["full_name"], {"k": "v"}, wait=10))
        [request] = await fake.wait_for_requests(1)
        started = time.monotonic()
        upload = await api.upload(provider["id"], request["request_id"], b"plain text")
        assert upload.status_code == 204
        response = await read
        assert time.monotonic() - started < SLACK
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.content == b"plain text"


async def test_a_superuser_may_upload_for_any_provider(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    digest = await ask_pending(api, room, provider["full_name"], {"by": "admin"})
    response = await api.upload(provider["id"], digest, b"[1,2,3]", ADMIN)
    assert response.status_code == 204, response.text
    read = await api.read(room, provider["full_name"], {"by": "admin"}, wait=0)
    assert read.status_code == 200
    assert read.json() == [1, 2, 3]


async def _cached(
    api: Api[ProviderServer],
    room: str,
    provider: dict[str, Any],
    params: dict[str, Any],
    data: bytes,
) -> None:
    """Store a result for ``params`` and read it back as a cache hit."""
    digest = await ask_pending(api, room, provider["full_name"], params)
    assert (await api.upload(provider["id"], digest, data)).status_code == 204
    hit = await api.read(room, provider["full_name"], params, wait=0)
    assert hit.status_code == 200 and hit.content == data, hit.text


async def test_a_deleted_provider_is_not_read_from_the_cache(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    await _cached(api, room, provider, {"f": "1"}, b"1")
    assert (await api.request("DELETE", f"/providers/{provider['id']}")).status_code == 204
    gone = await api.read(room, provider["full_name"], {"f": "1"}, wait=0)
    assert_problem(gone, 404, "provider-not-found")


async def test_a_cleaned_up_workers_provider_is_not_read_from_the_cache(
    api: Api[ProviderServer],
) -> None:
    room = new_room()
    worker = await api.create_worker()
    provider = await api.register_provider(room, unique(), worker_id=worker)
    await _cached(api, room, provider, {"f": "1"}, b"1")
    assert (await api.request("DELETE", f"/workers/{worker}")).status_code == 204
    gone = await api.read(room, provider["full_name"], {"f": "1"}, wait=0)
    assert_problem(gone, 404, "provider-not-found")


async def test_a_hit_uses_the_current_content_type(api: Api[ProviderServer]) -> None:
    room, name = new_room(), unique()
    provider = await api.register_provider(room, name, content_type="application/json")
    await _cached(api, room, provider, {"f": "1"}, b"1")
    await api.register_provider(
        room, name, content_type="text/plain", worker_id=provider["worker_id"]
    )
    hit = await api.read(room, provider["full_name"], {"f": "1"}, wait=0)
    assert hit.status_code == 200
    assert hit.headers["content-type"].startswith("text/plain")


async def test_a_hit_still_checks_the_room(api: Api[ProviderServer]) -> None:
    room = new_room()
    provider = await api.register_provider(room, unique())
    await _cached(api, room, provider, {"f": "1"}, b"1")
    other = await api.read(new_room(), provider["full_name"], {"f": "1"}, wait=0)
    assert_problem(other, 404, "provider-not-found")
    invalid = await api.read("bad:room", provider["full_name"], {"f": "1"}, wait=0)
    assert_problem(invalid, 400, "invalid-room-id")
