from __future__ import annotations

import gc
import logging
import statistics
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from joblib_app.realtime.notifier import InProcessNotifier, Notifier, RedisNotifier

WAIT = 5.0  # generous: a delivered message arrives in milliseconds, a lost one fails the test

MakeNotifier = Callable[[], Awaitable[Notifier]]


@pytest.fixture(params=["memory", "redis"])
def notifier_config(request: pytest.FixtureRequest) -> tuple[str, str] | None:
    """None for the in-process notifier, else (redis_url, channel_prefix)."""
    if request.param == "memory":
        return None
    return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")


@pytest.fixture
async def make_notifier(
    notifier_config: tuple[str, str] | None,
) -> AsyncIterator[MakeNotifier]:
    """Builds started notifiers of one kind; all are stopped afterwards."""
    started: list[Notifier] = []

    async def make() -> Notifier:
        notifier: Notifier
        if notifier_config is None:
            notifier = InProcessNotifier()
        else:
            url, prefix = notifier_config
            notifier = RedisNotifier(url, channel_prefix=prefix)
        await notifier.start()
        started.append(notifier)
        return notifier

    yield make
    for notifier in started:
        await notifier.stop()


@pytest.fixture
async def notifier(make_notifier: MakeNotifier) -> Notifier:
    return await make_notifier()


async def test_message_published_after_listen_reaches_listener(notifier: Notifier) -> None:
    async with notifier.listen(["task:1"]) as listener:
        await notifier.publish("task:1", "changed")
        assert await listener.wait(WAIT) == "changed"


async def test_messages_are_queued_in_order_until_waited_for(notifier: Notifier) -> None:
    async with notifier.listen(["task:1"]) as listener:
        for i in range(5):
            await notifier.publish("task:1", str(i))
        assert [await listener.wait(WAIT) for _ in range(5)] == ["0", "1", "2", "3", "4"]


async def test_default_message_is_empty_string(notifier: Notifier) -> None:
    async with notifier.listen(["task:1"]) as listener:
        await notifier.publish("task:1")
        assert await listener.wait(WAIT) == ""


async def test_wait_times_out_with_none(notifier: Notifier) -> None:
    async with notifier.listen(["task:1"]) as listener:
        start = time.monotonic()
        assert await listener.wait(0.1) is None
        assert time.monotonic() - start >= 0.09
        assert await listener.wait(0) is None


async def test_listener_on_several_channels(notifier: Notifier) -> None:
    async with notifier.listen(["job:@global:a", "job:@global:b"]) as listener:
        await notifier.publish("job:@global:b", "b")
        await notifier.publish("job:@global:a", "a")
        assert await listener.wait(WAIT) == "b"
        assert await listener.wait(WAIT) == "a"


async def test_message_not_delivered_to_listeners_of_other_channels(notifier: Notifier) -> None:
    async with (
        notifier.listen(["task:1"]) as one,
        notifier.listen(["task:10"]) as ten,
    ):
        await notifier.publish("task:1", "for-one")
        await notifier.publish("task:10", "for-ten")
        # Per-listener delivery is ordered, so "for-ten" first proves "for-one" never came.
        assert await ten.wait(WAIT) == "for-ten"
        assert await one.wait(WAIT) == "for-one"
        assert await one.wait(0) is None


async def test_every_listener_of_a_channel_gets_the_message(notifier: Notifier) -> None:
    async with notifier.listen(["task:1"]) as first, notifier.listen(["task:1"]) as second:
        await notifier.publish("task:1", "x")
        assert await first.wait(WAIT) == "x"
        assert await second.wait(WAIT) == "x"


async def test_exited_listener_is_unregistered(notifier: Notifier) -> None:
    async with notifier.listen(["task:1"]):
        pass
    async with notifier.listen(["task:1"]) as listener:
        await notifier.publish("task:1", "later")
        assert await listener.wait(WAIT) == "later"
        assert await listener.wait(0) is None
    if isinstance(notifier, InProcessNotifier | RedisNotifier):
        assert notifier._fanout._listeners == {}


async def test_wake_latency_p50(notifier: Notifier) -> None:
    latencies = []
    async with notifier.listen(["task:1"]) as listener:
        for i in range(50):
            start = time.perf_counter()
            await notifier.publish("task:1", str(i))
            assert await listener.wait(WAIT) == str(i)
            latencies.append(time.perf_counter() - start)
    assert statistics.median(latencies) < 1.0


async def test_stop_is_clean_and_idempotent(make_notifier: MakeNotifier) -> None:
    gc.collect()  # earlier tests' garbage must not be blamed on this one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notifier = await make_notifier()
        async with notifier.listen(["task:1"]) as listener:
            await notifier.publish("task:1", "x")
            assert await listener.wait(WAIT) == "x"
        await notifier.stop()
        await notifier.stop()
        gc.collect()
    assert [str(w.message) for w in caught] == []


# Redis only: several processes, connection count, outages.


async def test_publish_on_one_process_reaches_listeners_on_another(
    redis_url: str, redis_prefix: str
) -> None:
    first = RedisNotifier(redis_url, channel_prefix=redis_prefix)
    second = RedisNotifier(redis_url, channel_prefix=redis_prefix)
    await first.start()
    await second.start()
    try:
        async with first.listen(["job:r:a"]) as remote, second.listen(["job:r:a"]) as local:
            await second.publish("job:r:a", "submitted")
            assert await remote.wait(WAIT) == "submitted"
            # The publisher's own process gets it back exactly once.
            assert await local.wait(WAIT) == "submitted"
            assert await local.wait(0.2) is None
    finally:
        await first.stop()
        await second.stop()


async def test_channel_prefix_isolates_notifiers(redis_url: str, redis_prefix: str) -> None:
    other = RedisNotifier(redis_url, channel_prefix=redis_prefix + "other:")
    mine = RedisNotifier(redis_url, channel_prefix=redis_prefix + "mine:")
    await other.start()
    await mine.start()
    try:
        async with mine.listen(["c"]) as listener:
            await other.publish("c", "not-for-me")
            await mine.publish("c", "for-me")
            assert await listener.wait(WAIT) == "for-me"
    finally:
        await other.stop()
        await mine.stop()


async def _pubsub_connections(admin: aioredis.Redis, name: str) -> list[dict[str, str]]:
    clients = await admin.client_list()
    return [c for c in clients if c.get("name") == name and int(c.get("psub", 0)) > 0]


async def test_one_pubsub_connection_released_on_stop(redis_url: str, redis_prefix: str) -> None:
    name = f"joblibtest-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(redis_url, client_name=name)
    admin = aioredis.Redis.from_url(redis_url, decode_responses=True)
    notifier = RedisNotifier(client=client, channel_prefix=redis_prefix)
    try:
        await notifier.start()
        for channel in ["a", "b", "c"]:
            async with notifier.listen([channel]):
                await notifier.publish(channel)
        assert len(await _pubsub_connections(admin, name)) == 1
        await notifier.stop()
        assert await _pubsub_connections(admin, name) == []
    finally:
        await notifier.stop()
        await client.aclose()
        await admin.aclose()


async def test_reader_reconnects_after_connection_is_killed(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"joblibtest-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(redis_url, client_name=name)
    admin = aioredis.Redis.from_url(redis_url, decode_responses=True)
    notifier = RedisNotifier(client=client, channel_prefix=redis_prefix)
    try:
        await notifier.start()
        generation = notifier.generation
        [connection] = await _pubsub_connections(admin, name)
        with caplog.at_level(logging.WARNING, logger="joblib_app.realtime.notifier"):
            await admin.client_kill_filter(_id=connection["id"])
            async with notifier.listen(["task:1"]) as listener:
                # Messages published while the subscription is down are lost by design, so
                # keep publishing until one arrives through the new subscription.
                deadline = time.monotonic() + 10
                received = None
                while received is None and time.monotonic() < deadline:
                    await notifier.publish("task:1", "after")
                    received = await listener.wait(0.2)
        assert received == "after"
        assert notifier.generation > generation
        assert notifier.connected
    finally:
        await notifier.stop()
        await client.aclose()
        await admin.aclose()


async def test_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    notifier = RedisNotifier("redis://127.0.0.1:1/0", operation_timeout=1.0)
    try:
        start = time.monotonic()
        with pytest.raises((OSError, aioredis.ConnectionError)):
            await notifier.start()
        with caplog.at_level(logging.WARNING, logger="joblib_app.realtime.notifier"):
            await notifier.publish("task:1", "dropped")  # logged, not raised
        assert time.monotonic() - start < 3
        assert "Dropped notification on 'task:1'" in caplog.text
        assert not notifier.connected
    finally:
        await notifier.stop()
