"""A taskiq broker on a Redis list whose worker survives redis-py 8's socket timeout.

taskiq-redis's ``ListQueueBroker`` waits for tasks with ``BRPOP`` and no timeout. redis-py 8
gives every connection a 5 s ``socket_timeout``, so an idle ``taskiq worker`` dies every
~5 s (``TimeoutError: Timeout reading from ...``), is restarted, and takes the task it was
running with it. Here ``BRPOP`` asks for less than the socket timeout and comes back empty
instead, every Redis call stays bounded (a hung Redis is noticed), and connection errors
are retried with one log line per outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq_redis import ListQueueBroker

logger = logging.getLogger(__name__)

# BRPOP's own timeout (whole seconds for older Redis); the socket allows this plus slack.
_BLOCK_SECONDS = 2
_SOCKET_SLACK_SECONDS = 3.0
_RETRY_SECONDS = 0.5


class RedisListBroker(ListQueueBroker):
    """``ListQueueBroker`` with bounded Redis calls: use it on both sides (the server's
    ``JoblibConfig(broker=...)`` and the ``taskiq worker`` module).

    Args:
        url: the Redis URL.
        queue_name: the Redis list (the same on the server and the worker).
        socket_timeout: bound of every Redis call, seconds; must exceed the 2 s ``BRPOP``.
        **kwargs: passed to ``ListQueueBroker`` (``result_backend``, ...).
    """

    def __init__(
        self,
        url: str,
        *,
        queue_name: str = "taskiq",
        socket_timeout: float = _BLOCK_SECONDS + _SOCKET_SLACK_SECONDS,
        **kwargs: Any,
    ) -> None:
        if socket_timeout <= _BLOCK_SECONDS:
            raise ValueError(f"socket_timeout must exceed the {_BLOCK_SECONDS} s BRPOP")
        super().__init__(
            url,
            queue_name=queue_name,
            socket_timeout=socket_timeout,
            socket_connect_timeout=min(socket_timeout, 5.0),
            **kwargs,
        )
        self._outage_logged = False

    async def listen(self) -> AsyncGenerator[bytes, None]:
        """Yield queued messages; an empty ``BRPOP`` loops, a Redis error is retried."""
        while True:
            try:
                async with Redis(connection_pool=self.connection_pool) as redis_conn:
                    popped = await redis_conn.brpop([self.queue_name], timeout=_BLOCK_SECONDS)
            except (RedisError, OSError) as exc:
                if not self._outage_logged:
                    self._outage_logged = True
                    logger.warning(
                        "taskiq broker cannot read queue %r, retrying: %s: %s",
                        self.queue_name,
                        type(exc).__name__,
                        exc,
                    )
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            if self._outage_logged:
                self._outage_logged = False
                logger.warning("taskiq broker reads queue %r again", self.queue_name)
            if popped is not None:
                # The broker's pool does not decode responses: messages are bytes.
                yield cast(bytes, popped[1])
