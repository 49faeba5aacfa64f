"""Wake waiters when something happens on a named channel, in this process or across processes.

The server long-polls on channels such as ``task:{id}`` (a task changed) and
``job:{full_name}`` (a task was submitted). A notification carries no state: a woken waiter
re-reads the database, and waiters keep a slow database re-check as a safety net, so a lost
notification costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 2.0
# An idle pub/sub connection is PINGed this often; no answer within the next period means
# the connection is dead even though TCP never reported it (e.g. a network partition).
_IDLE_PING_SECONDS = 5.0


class Listener(Protocol):
    async def wait(self, timeout: float) -> str | None:  # noqa: ASYNC109 - contract API
        """Next message published on any of the listened channels since the listener was
        entered (queued, never lost while entered), or None when `timeout` seconds pass."""
        ...


class Notifier(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, channel: str, message: str = "") -> None: ...

    def listen(self, channels: Collection[str]) -> AbstractAsyncContextManager[Listener]:
        """Subscription is active when `async with` entered: anything published after that
        reaches this listener."""
        ...

    def listener_count(self, channel: str) -> int:
        """How many listeners of this process are listening on `channel` right now."""
        ...


class _QueueListener:
    """One waiter's inbox; unbounded because a listener lives only for one long-poll."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def put(self, message: str) -> None:
        self._queue.put_nowait(message)

    async def wait(self, timeout: float) -> str | None:  # noqa: ASYNC109 - contract API
        """Next queued message, or None after `timeout` seconds."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        try:
            # Cancelling Queue.get on timeout never drops an item: it stays queued.
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None


class _LocalFanOut:
    """Delivers a message on a channel to every listener of this process registered for it."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[_QueueListener]] = {}

    def dispatch(self, channel: str, message: str) -> None:
        for listener in self._listeners.get(channel, ()):
            listener.put(message)

    def count(self, channel: str) -> int:
        return len(self._listeners.get(channel, ()))

    @asynccontextmanager
    async def listen(self, channels: Collection[str]) -> AsyncIterator[Listener]:
        listener = _QueueListener()
        names = set(channels)
        for name in names:
            self._listeners.setdefault(name, set()).add(listener)
        try:
            yield listener
        finally:
            for name in names:
                registered = self._listeners.get(name)
                if registered is not None:
                    registered.discard(listener)
                    if not registered:
                        del self._listeners[name]


class InProcessNotifier:
    """A notifier for a single server process: publish delivers to local listeners directly."""

    def __init__(self) -> None:
        self._fanout = _LocalFanOut()

    async def start(self) -> None:
        """Nothing to start; present for the common lifecycle."""

    async def stop(self) -> None:
        """Nothing to stop; present for the common lifecycle."""

    async def publish(self, channel: str, message: str = "") -> None:
        """Deliver `message` to every listener currently listening on `channel`."""
        self._fanout.dispatch(channel, message)

    def listen(self, channels: Collection[str]) -> AbstractAsyncContextManager[Listener]:
        """Listen on `channels`; active as soon as the context is entered."""
        return self._fanout.listen(channels)

    def listener_count(self, channel: str) -> int:
        """How many listeners of this process are listening on `channel` right now."""
        return self._fanout.count(channel)


class RedisNotifier:
    """A notifier shared by every server process through Redis pub/sub.

    One pub/sub connection per notifier, pattern-subscribed to ``channel_prefix + "*"``; a
    reader task fans messages out to local listeners. Publishing goes through Redis only: the
    own process receives its messages back through the pattern subscription.

    ``client`` may be given instead of ``redis_url`` (it is then not closed by :meth:`stop`).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        channel_prefix: str = "joblib:notify:",
        client: aioredis.Redis | None = None,
        operation_timeout: float = 2.0,
    ) -> None:
        if (redis_url is None) == (client is None):
            raise ValueError("pass exactly one of redis_url or client")
        self._owns_client = client is None
        self._client: aioredis.Redis = client or aioredis.Redis.from_url(
            cast(str, redis_url),  # given when client is not (checked above)
            socket_connect_timeout=operation_timeout,
            socket_timeout=operation_timeout,
            # One quick retry heals a pooled connection that went stale across a Redis restart.
            retry=Retry(NoBackoff(), 1),
        )
        self._prefix = channel_prefix
        self._pattern = re.sub(r"([*?\[\]\\])", r"\\\1", channel_prefix) + "*"
        self._timeout = operation_timeout
        self._fanout = _LocalFanOut()
        self._reader: asyncio.Task[None] | None = None
        self._connected = False
        self._generation = 0

    @property
    def connected(self) -> bool:
        """True while the pattern subscription is live (messages are being received)."""
        return self._connected

    @property
    def generation(self) -> int:
        """Counts confirmed (re)subscriptions; a change means messages may have been missed."""
        return self._generation

    async def start(self) -> None:
        """Subscribe and start the reader; returns once the subscription is confirmed.

        Raises the Redis error if the first subscription fails (later drops are retried).
        """
        if self._reader is not None:
            return
        pubsub = await self._subscribe()
        self._reader = asyncio.create_task(self._read_forever(pubsub), name="joblib-notifier")

    async def stop(self) -> None:
        """Stop the reader and close the connections this notifier opened."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader})
        self._connected = False
        if self._owns_client:
            await self._client.aclose()

    async def publish(self, channel: str, message: str = "") -> None:
        """PUBLISH `message` on `channel`; while Redis is down the message is logged and dropped."""
        try:
            await self.publish_or_raise(channel, message)
        except (RedisError, OSError) as exc:
            logger.warning(
                "Dropped notification on %r, Redis unavailable: %s", channel, _describe(exc)
            )

    async def publish_or_raise(self, channel: str, message: str = "") -> None:
        """Like :meth:`publish`, but Redis errors (incl. TimeoutError) reach the caller."""
        async with asyncio.timeout(self._timeout):
            await self._client.publish(self._prefix + channel, message)

    def listen(self, channels: Collection[str]) -> AbstractAsyncContextManager[Listener]:
        """Listen on `channels`; active as soon as the context is entered (after start())."""
        return self._fanout.listen(channels)

    def listener_count(self, channel: str) -> int:
        """How many listeners of this process are listening on `channel` right now."""
        return self._fanout.count(channel)

    async def _subscribe(self) -> PubSub:
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(self._timeout):
                await pubsub.psubscribe(self._pattern)
                while not self._handle(await pubsub.get_message(timeout=None)):
                    pass
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub

    def _handle(self, message: dict[str, Any] | None) -> bool:
        """Dispatch one pub/sub message; True if it confirmed the pattern subscription."""
        if message is None:
            return False
        kind = message["type"]
        if kind == "pmessage":
            channel = _text(message["channel"])[len(self._prefix) :]
            self._fanout.dispatch(channel, _text(message["data"]))
        elif kind == "psubscribe":
            # redis-py may reconnect and resubscribe on its own; every confirmation counts.
            self._connected = True
            self._generation += 1
            return True
        return False

    async def _read_forever(self, pubsub: PubSub | None) -> None:
        backoff = _BACKOFF_MIN
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = await self._subscribe()
                        logger.info("Redis notifier resubscribed to %r", self._pattern)
                    backoff = _BACKOFF_MIN
                    await self._pump(pubsub)
                except (RedisError, OSError) as exc:
                    if self._connected:
                        logger.warning(
                            "Redis notifier connection lost, reconnecting: %s", _describe(exc)
                        )
                    else:
                        logger.debug("Redis notifier reconnect failed: %s", _describe(exc))
                    self._connected = False
                if pubsub is not None:
                    await pubsub.aclose()
                    pubsub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
        finally:
            self._connected = False
            if pubsub is not None:
                await pubsub.aclose()

    async def _pump(self, pubsub: PubSub) -> None:
        awaiting_pong = False
        while True:
            message = await pubsub.get_message(timeout=_IDLE_PING_SECONDS)
            if message is not None:
                awaiting_pong = False
                self._handle(message)
            elif awaiting_pong:
                raise TimeoutError("Redis did not answer PING on the pub/sub connection")
            else:
                async with asyncio.timeout(self._timeout):
                    await pubsub.ping()
                awaiting_pong = True


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
