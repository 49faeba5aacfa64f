"""Redis off the task path: bounded calls, one log line per outage, events sent in the
background.

A hung Redis (SIGSTOP, a partition) accepts TCP and never answers; a dead one refuses.
Either way a submit, claim or update must not wait for it: the change is committed in the
database, and its events and cross-process wake-ups are best effort (waiters re-read the
database on their own). So with Redis configured, :class:`BackgroundSender` sends them from
one task per process, in order, each call bounded; while Redis is out they are dropped,
counted, and logged once when the outage starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# While Redis is out, one queued send per this period is tried (the rest are dropped).
_PROBE_SECONDS = 0.5
# Socket.IO listener: reconnect backoff (capped so a recovered Redis is used within 3 s).
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 1.0
# An idle Socket.IO pub/sub connection is PINGed this often; no answer within the next
# period means it is dead.
_IDLE_PING_SECONDS = 2.0
_QUEUE_LIMIT = 10_000


def bounded_redis_options(timeout: float) -> dict[str, Any]:
    """Connection options for a Redis client of the package: every socket operation bounded.

    redis-py 8 defaults ``socket_timeout`` to 5 s; ours is explicit, and a blocking
    command must ask for less than it (see :mod:`joblib_app.internal.redis_broker`).
    """
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 0,
    }


class RedisOutage:
    """Tracks whether Redis is reachable and logs each outage once, with what it cost."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down_since: float | None = None
        self.dropped = 0
        self.outages = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        """A call failed: the first failure of an outage is logged, the rest are not."""
        if self.down_since is None:
            self.down_since = asyncio.get_running_loop().time()
            self.outages += 1
            logger.warning("Redis unavailable for %s: %s", self.what, _describe(exc))

    def recovered(self) -> None:
        """A call succeeded: an outage in progress ends, with one line."""
        if self.down_since is None:
            return
        lasted = asyncio.get_running_loop().time() - self.down_since
        logger.warning(
            "Redis available again for %s after %.1f s; %d message(s) dropped meanwhile",
            self.what,
            lasted,
            self.dropped,
        )
        self.down_since = None
        self.dropped = 0


class BackgroundSender:
    """Runs Redis sends (Socket.IO emits, notifications) one at a time, off the request.

    :meth:`submit` never waits. Each send is bounded by ``timeout``; a failure starts an
    outage, during which only one send per ``_PROBE_SECONDS`` is tried and the others are
    dropped and counted. Order within the process is kept.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._queue: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue(_QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self.outage = RedisOutage("events and wake-ups")
        self._next_probe = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="joblib-redis-sender")

    async def stop(self, drain_seconds: float = 1.0) -> None:
        """Send what is queued for up to ``drain_seconds``, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(drain_seconds):
                await self._queue.join()
        except TimeoutError:
            logger.warning("Shutting down with %d Redis send(s) unsent", self._queue.qsize())
        task.cancel()
        await asyncio.wait({task})

    def submit(self, send: Callable[[], Awaitable[Any]]) -> None:
        """Queue ``send``; with the queue full (Redis out for long), drop it."""
        if self._task is None:
            # Not started (or stopped): nothing would send it.
            self.outage.dropped += 1
            return
        try:
            self._queue.put_nowait(send)
        except asyncio.QueueFull:
            self.outage.failed(RuntimeError(f"{_QUEUE_LIMIT} sends queued"))
            self.outage.dropped += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            send = await self._queue.get()
            try:
                if self.outage.down and loop.time() < self._next_probe:
                    self.outage.dropped += 1
                    continue
                try:
                    async with asyncio.timeout(self._timeout):
                        await send()
                except (RedisError, OSError) as exc:
                    # TimeoutError is an OSError: a hung Redis lands here too.
                    self.outage.failed(exc)
                    self.outage.dropped += 1
                    self._next_probe = loop.time() + _PROBE_SECONDS
                else:
                    self.outage.recovered()
            except Exception:
                # Not a Redis failure (a bug, a payload that does not serialise): say so,
                # and keep sending the others.
                logger.exception("A background Socket.IO emit or notification failed")
            finally:
                self._queue.task_done()


class BoundedRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager with every Redis call bounded.

    Its own manager blocks a publish for up to twice redis-py's socket timeout, logs each
    failed message, and after an outage waits 1, 2, 4, 8 ... s before resubscribing; here
    a publish raises (the :class:`BackgroundSender` accounts for it), the listener PINGs an
    idle connection, reconnects within ``_BACKOFF_MAX``, and logs once per outage.
    Publishing and listening use clients of their own, so a reconnect of one never closes
    the other's connection.
    """

    def __init__(self, url: str, *, channel: str, timeout: float) -> None:
        super().__init__(url, channel=channel, redis_options=bounded_redis_options(timeout))
        self._timeout = timeout
        self._publisher: Any = None
        self.listen_outage = RedisOutage("cross-process Socket.IO")

    def _new_client(self) -> Any:
        return self._get_redis_module().Redis.from_url(
            self.redis_url,
            **self.redis_options,
            # One quick retry heals a pooled connection that went stale across a restart.
            retry=Retry(NoBackoff(), 1),
        )

    async def _publish(self, data: Any) -> Any:
        if self._publisher is None:
            self._publisher = self._new_client()
        async with asyncio.timeout(self._timeout):
            return await self._publisher.publish(self.channel, self.json.dumps(data))

    async def _redis_listen_with_retries(self) -> AsyncIterator[dict[str, Any]]:
        backoff = _BACKOFF_MIN
        while True:
            client = self._new_client()
            self.pubsub = pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(self._timeout):
                    await pubsub.subscribe(self.channel)
                self.listen_outage.recovered()
                backoff = _BACKOFF_MIN
                awaiting_pong = False
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_IDLE_PING_SECONDS
                    )
                    if message is not None:
                        awaiting_pong = False
                        yield message
                    elif awaiting_pong:
                        raise TimeoutError("Redis did not answer PING on the Socket.IO channel")
                    else:
                        async with asyncio.timeout(self._timeout):
                            await pubsub.ping()
                        awaiting_pong = True
            except (RedisError, OSError) as exc:
                self.listen_outage.failed(exc)
            finally:
                await _close_quietly(pubsub, client)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def close(self) -> None:
        """Close the publishing client (the listener's ends with its task)."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.aclose()


async def _close_quietly(pubsub: Any, client: Any) -> None:
    """Close a listener's connections; on a dead Redis closing may fail or hang too."""
    try:
        async with asyncio.timeout(1.0):
            await pubsub.aclose()
            await client.aclose()
    except (RedisError, OSError) as exc:
        logger.debug("Closing a Socket.IO Redis listener failed: %s", _describe(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
