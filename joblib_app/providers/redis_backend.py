"""A result backend in Redis, shared by every server process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from joblib_app.providers.backend import ResultBackendUnavailable
from joblib_app.realtime.notifier import RedisNotifier

_MAX_CONNECTIONS = 100

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How often a waiter re-reads the key while the pub/sub connection is down.
_POLL_SECONDS = 0.25
# While subscribed, a waiter checks this often whether the subscription was re-established
# (messages published in between were lost, so the key must be re-read).
_SUBSCRIPTION_CHECK_SECONDS = 1.0
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisResultBackend:
    """A :class:`~joblib_app.providers.backend.ResultBackend` in Redis.

    ``store`` is SET EX, ``acquire_inflight`` is SET NX EX, waiters are woken through one
    pub/sub connection per backend (a :class:`~joblib_app.realtime.notifier.RedisNotifier`).
    Every operation is bounded by ``operation_timeout``; an unreachable Redis raises
    :class:`~joblib_app.providers.backend.ResultBackendUnavailable`. After an outage the
    backend recovers by itself.

    Pass ``redis_url`` or an existing ``client`` (created without ``decode_responses``; it is
    not closed by :meth:`close`). ``key_prefix`` is prepended to every key.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        key_prefix: str = "",
        operation_timeout: float = 2.0,
        channel_prefix: str = "joblib:provider-key:",
    ) -> None:
        if (redis_url is None) == (client is None):
            raise ValueError("pass exactly one of redis_url or client")
        if client is not None and client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must not decode responses: values are bytes")
        self._owns_client = client is None
        self._client: aioredis.Redis = client or aioredis.Redis.from_pool(
            # The client owns the pool (closed with it). A burst of reads (a few short
            # commands each, twice over while one waits for a result or a problem) waits for
            # a pooled connection instead of failing with "Too many connections", as
            # redis-py's default pool does past 100.
            aioredis.BlockingConnectionPool.from_url(
                cast(str, redis_url),  # given when client is not (checked above)
                max_connections=_MAX_CONNECTIONS,
                timeout=operation_timeout,
                socket_connect_timeout=operation_timeout,
                socket_timeout=operation_timeout,
                # One quick retry heals a pooled connection gone stale across a Redis restart.
                retry=Retry(NoBackoff(), 1),
            )
        )
        self._prefix = key_prefix
        self._timeout = operation_timeout
        self._notifier = RedisNotifier(
            client=self._client, channel_prefix=channel_prefix, operation_timeout=operation_timeout
        )
        self._polling_logged = False

    async def start(self) -> None:
        """Open the pub/sub connection that wakes waiters; returns once it is subscribed."""
        await self._guard(self._notifier.start())

    async def close(self) -> None:
        """Close the pub/sub connection, and the client if this backend created it."""
        await self._notifier.stop()
        if self._owns_client:
            await self._client.aclose()

    async def store(self, key: str, data: bytes, ttl: int) -> None:
        """SET `key` to `data` with an expiry of `ttl` seconds."""
        _check_ttl(ttl)
        await self._guard(self._client.set(self._prefix + key, data, ex=ttl))

    async def get(self, key: str) -> bytes | None:
        """GET `key`; None if absent or expired."""
        # The client does not decode responses (checked in __init__): values are bytes.
        return cast("bytes | None", await self._guard(self._client.get(self._prefix + key)))

    async def delete(self, key: str) -> None:
        """DEL `key`."""
        await self._guard(self._client.delete(self._prefix + key))

    async def acquire_inflight(self, key: str, ttl: int) -> bool:
        """SET `key` NX with an expiry of `ttl` seconds; True if this caller set it."""
        _check_ttl(ttl)
        taken = await self._guard(self._client.set(self._prefix + key, b"1", nx=True, ex=ttl))
        return bool(taken)

    async def release_inflight(self, key: str) -> None:
        """DEL the in-flight lock `key`."""
        await self.delete(key)

    async def wait_for_key(self, key: str, timeout: float) -> bytes | None:  # noqa: ASYNC109
        """Wait up to `timeout` seconds for a value under `key` (see the protocol).

        While the pub/sub connection is down, falls back to polling GET.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._notifier.listen([self._prefix + key]) as listener:
            while True:
                # Read before the GET: a resubscription after this point forces another GET.
                generation = self._notifier.generation
                value = await self.get(key)
                if value is not None:
                    return value
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None
                    if not self._notifier.connected:
                        self._log_polling()
                        await asyncio.sleep(min(remaining, _POLL_SECONDS))
                        break
                    self._polling_logged = False
                    woke = await listener.wait(min(remaining, _SUBSCRIPTION_CHECK_SECONDS))
                    if woke is not None or generation != self._notifier.generation:
                        break

    async def notify_key(self, key: str) -> None:
        """PUBLISH a wake-up for `key`, received by waiters in every process."""
        await self._guard(self._notifier.publish_or_raise(self._prefix + key))

    async def _guard(self, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await operation
        except _UNAVAILABLE as exc:
            raise ResultBackendUnavailable(
                f"Redis is unavailable: {type(exc).__name__}: {exc}"
            ) from exc

    def _log_polling(self) -> None:
        # Once per outage: every waiter polls, but one line says why.
        if not self._polling_logged:
            self._polling_logged = True
            logger.warning("Provider result pub/sub is down; waiters poll Redis instead")


def _check_ttl(ttl: int) -> None:
    if ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl}")
