from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

import pytest
import redis.asyncio as aioredis

from joblib_app.providers.backend import (
    ResultBackend,
    ResultBackendUnavailable,
    ResultTooLargeError,
)
from joblib_app.providers.memory import InMemoryResultBackend
from joblib_app.providers.redis_backend import RedisResultBackend

KEY = "provider-result:@global:files:abc123"
LOCK = "provider-inflight:@global:files:abc123"


class Backend(ResultBackend, Protocol):
    """The protocol plus the lifecycle both implementations have."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@pytest.fixture(params=["memory", "redis"])
def backend_config(request: pytest.FixtureRequest) -> tuple[str, str] | None:
    """None for the in-memory backend, else (redis_url, key_prefix)."""
    if request.param == "memory":
        return None
    return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")


@pytest.fixture
async def backend(backend_config: tuple[str, str] | None) -> AsyncIterator[Backend]:
    if backend_config is None:
        instance: Backend = InMemoryResultBackend()
    else:
        url, prefix = backend_config
        instance = RedisResultBackend(url, key_prefix=prefix)
    await instance.start()
    yield instance
    await instance.close()


async def _eventually_absent(backend: ResultBackend, key: str, within: float) -> float:
    """Seconds until `key` reads as absent; fails after `within` seconds."""
    start = time.monotonic()
    while await backend.get(key) is not None:
        assert time.monotonic() - start < within, f"{key} still present after {within}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def _first_get_done(backend: ResultBackend, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set once `backend.get` (which wait_for_key uses to re-check) has returned."""
    done = asyncio.Event()
    real_get = backend.get

    async def spying_get(key: str) -> bytes | None:
        value = await real_get(key)
        done.set()
        return value

    monkeypatch.setattr(backend, "get", spying_get)
    return done


async def test_satisfies_protocol(backend: Backend) -> None:
    assert isinstance(backend, ResultBackend)


async def test_store_get_round_trip_binary(backend: Backend) -> None:
    data = bytes(range(256)) * 4 + b"\x00\r\n\xff"
    await backend.store(KEY, data, ttl=60)
    assert await backend.get(KEY) == data


async def test_store_get_5mb_byte_identical(backend: Backend) -> None:
    data = os.urandom(5 * 1024 * 1024)
    await backend.store(KEY, data, ttl=60)
    assert await backend.get(KEY) == data


async def test_store_overwrites(backend: Backend) -> None:
    await backend.store(KEY, b"old", ttl=60)
    await backend.store(KEY, b"new", ttl=60)
    assert await backend.get(KEY) == b"new"


async def test_get_missing_is_none(backend: Backend) -> None:
    assert await backend.get("provider-result:nope:0") is None


async def test_delete(backend: Backend) -> None:
    await backend.store(KEY, b"x", ttl=60)
    await backend.delete(KEY)
    assert await backend.get(KEY) is None
    await backend.delete(KEY)  # absent: no error


async def test_value_expires_after_ttl(backend: Backend) -> None:
    await backend.store(KEY, b"x", ttl=1)
    await backend.store("long-lived", b"y", ttl=60)
    assert await backend.get(KEY) == b"x"
    elapsed = await _eventually_absent(backend, KEY, within=3)
    assert elapsed > 0.5  # it lived for (about) its TTL, not shorter
    assert await backend.get("long-lived") == b"y"


@pytest.mark.parametrize("ttl", [0, -1])
async def test_non_positive_ttl_rejected(backend: Backend, ttl: int) -> None:
    with pytest.raises(ValueError):
        await backend.store(KEY, b"x", ttl=ttl)
    with pytest.raises(ValueError):
        await backend.acquire_inflight(LOCK, ttl=ttl)


async def test_acquire_inflight_exactly_one_winner_of_50(backend: Backend) -> None:
    results = await asyncio.gather(*(backend.acquire_inflight(LOCK, ttl=30) for _ in range(50)))
    assert results.count(True) == 1
    assert results.count(False) == 49


async def test_release_then_reacquire(backend: Backend) -> None:
    assert await backend.acquire_inflight(LOCK, ttl=30)
    assert not await backend.acquire_inflight(LOCK, ttl=30)
    await backend.release_inflight(LOCK)
    assert await backend.acquire_inflight(LOCK, ttl=30)


async def test_inflight_lock_expires(backend: Backend) -> None:
    assert await backend.acquire_inflight(LOCK, ttl=1)
    await _eventually_absent(backend, LOCK, within=3)
    assert await backend.acquire_inflight(LOCK, ttl=30)


async def test_wait_for_key_woken_by_notify_from_another_task(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Store only after the waiter's own cache re-check missed, so the wake-up must come from
    # notify_key (the waiter's timeout is far longer than the test allows).
    checked = _first_get_done(backend, monkeypatch)

    async def upload() -> None:
        await checked.wait()
        await backend.store(KEY, b"result", ttl=60)
        await backend.notify_key(KEY)

    start = time.monotonic()
    value, _ = await asyncio.gather(backend.wait_for_key(KEY, timeout=30), upload())
    assert value == b"result"
    assert time.monotonic() - start < 5


async def test_wait_for_key_wakes_every_waiter(backend: Backend) -> None:
    waiters = [asyncio.create_task(backend.wait_for_key(KEY, timeout=30)) for _ in range(10)]
    # wait_for_key re-checks the cache after subscribing, so storing at any point is safe.
    await backend.store(KEY, b"shared", ttl=60)
    await backend.notify_key(KEY)
    async with asyncio.timeout(5):
        assert await asyncio.gather(*waiters) == [b"shared"] * 10


async def test_wait_for_key_returns_at_once_when_cached(backend: Backend) -> None:
    await backend.store(KEY, b"cached", ttl=60)
    start = time.monotonic()
    assert await backend.wait_for_key(KEY, timeout=30) == b"cached"
    assert time.monotonic() - start < 1


async def test_wait_for_key_times_out_with_none(backend: Backend) -> None:
    start = time.monotonic()
    assert await backend.wait_for_key(KEY, timeout=0.3) is None
    assert 0.25 <= time.monotonic() - start < 2


async def test_notify_without_waiters_is_harmless(backend: Backend) -> None:
    await backend.notify_key(KEY)


# Redis only.


async def test_redis_wait_for_key_across_processes(redis_url: str, redis_prefix: str) -> None:
    reader = RedisResultBackend(redis_url, key_prefix=redis_prefix)
    uploader = RedisResultBackend(redis_url, key_prefix=redis_prefix)
    await reader.start()
    await uploader.start()
    try:
        waiting = asyncio.create_task(reader.wait_for_key(KEY, timeout=30))
        await uploader.store(KEY, b"from-elsewhere", ttl=60)
        await uploader.notify_key(KEY)
        async with asyncio.timeout(5):
            assert await waiting == b"from-elsewhere"
    finally:
        await reader.close()
        await uploader.close()


async def test_redis_key_prefix_applies(redis_url: str, redis_prefix: str) -> None:
    backend = RedisResultBackend(redis_url, key_prefix=redis_prefix)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await backend.store(KEY, b"x", ttl=60)
        assert await raw.get(redis_prefix + KEY) == b"x"
        assert 0 < await raw.ttl(redis_prefix + KEY) <= 60
    finally:
        await backend.close()
        await raw.aclose()


async def test_redis_unreachable_raises_unavailable_quickly() -> None:
    backend = RedisResultBackend("redis://127.0.0.1:1/0", operation_timeout=1.0)
    try:
        for operation in [
            backend.start(),
            backend.get(KEY),
            backend.store(KEY, b"x", ttl=60),
            backend.acquire_inflight(LOCK, ttl=60),
            backend.notify_key(KEY),
            backend.wait_for_key(KEY, timeout=10),
        ]:
            start = time.monotonic()
            with pytest.raises(ResultBackendUnavailable):
                await operation
            assert time.monotonic() - start < 3
    finally:
        await backend.close()


async def test_redis_wait_for_key_polls_while_pubsub_is_down(
    redis_url: str,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Never started: no pub/sub connection, as during an outage of the subscription only.
    waiter = RedisResultBackend(redis_url, key_prefix=redis_prefix)
    uploader = RedisResultBackend(redis_url, key_prefix=redis_prefix)
    await uploader.start()
    checked = _first_get_done(waiter, monkeypatch)
    try:
        with caplog.at_level(logging.WARNING, logger="joblib_app.providers.redis_backend"):
            waiting = asyncio.create_task(waiter.wait_for_key(KEY, timeout=30))
            await checked.wait()
            await uploader.store(KEY, b"polled", ttl=60)
            await uploader.notify_key(KEY)  # nobody can hear it: the waiter must poll
            async with asyncio.timeout(5):
                assert await waiting == b"polled"
        assert "poll" in caplog.text
    finally:
        await waiter.close()
        await uploader.close()


async def test_redis_waiter_survives_pubsub_reconnect(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"joblibtest-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(redis_url, client_name=name)
    admin = aioredis.Redis.from_url(redis_url, decode_responses=True)
    backend = RedisResultBackend(client=client, key_prefix=redis_prefix)
    await backend.start()
    checked = _first_get_done(backend, monkeypatch)
    try:
        waiting = asyncio.create_task(backend.wait_for_key(KEY, timeout=30))
        await checked.wait()
        [pubsub] = [
            c for c in await admin.client_list() if c.get("name") == name and c["psub"] != "0"
        ]
        await admin.client_kill_filter(_id=pubsub["id"])
        await backend.store(KEY, b"after-reconnect", ttl=60)
        await backend.notify_key(KEY)  # may be lost while resubscribing: the waiter re-reads
        async with asyncio.timeout(5):
            assert await waiting == b"after-reconnect"
    finally:
        await backend.close()
        await client.aclose()
        await admin.aclose()


def test_redis_backend_rejects_decoding_client() -> None:
    client = aioredis.Redis(decode_responses=True)
    with pytest.raises(ValueError, match="decode"):
        RedisResultBackend(client=client)


async def test_memory_backend_evicts_the_oldest_past_its_bound() -> None:
    memory = InMemoryResultBackend(max_bytes=100)
    for index in range(5):
        await memory.store(f"k{index}", bytes(30), 60)
    assert memory.stored_bytes <= 100
    assert await memory.get("k0") is None and await memory.get("k1") is None
    assert await memory.get("k4") == bytes(30)
    # A rewrite is a new write: the rewritten key is the last to go.
    await memory.store("k2", bytes(30), 60)
    await memory.store("k5", bytes(30), 60)
    assert await memory.get("k2") is not None and await memory.get("k3") is None
    with pytest.raises(ResultTooLargeError):
        await memory.store("huge", bytes(101), 60)


async def test_memory_backend_frees_expired_values_without_later_writes() -> None:
    memory = InMemoryResultBackend(max_bytes=1000, sweep_seconds=0.05)
    await memory.start()
    try:
        await memory.store("k", bytes(500), 1)
        assert memory.stored_bytes == 500
        deadline = time.monotonic() + 5
        while memory.stored_bytes:
            assert time.monotonic() < deadline, "an expired value was kept"
            await asyncio.sleep(0.05)
    finally:
        await memory.close()
