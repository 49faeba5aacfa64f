"""Watching a waiting request's client: a long-poll stops waiting when it hangs up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientGone:
    """Watches a request for the client hanging up, once its body has been read.

    Under uvicorn, ``receive()`` after the body waits until the connection closes and then
    answers ``http.disconnect``; a long-poll races its waits against that.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._watch: asyncio.Task[None] | None = None
        self._gone = asyncio.Event()

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    async def __aenter__(self) -> ClientGone:
        self._watch = asyncio.create_task(self._run(), name="joblib-client-gone")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.wait({self._watch})

    async def _run(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._gone.set()
                return

    async def race(self, waiting: Awaitable[T]) -> T | None:
        """``waiting``'s result, or ``None`` (``waiting`` cancelled) if the client goes first."""
        wait_task: asyncio.Task[Any] = asyncio.ensure_future(waiting)
        gone_task = asyncio.create_task(self._gone.wait())
        try:
            await asyncio.wait({wait_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone_task.cancel()
            if not wait_task.done():
                wait_task.cancel()
                await asyncio.wait({wait_task})
        return wait_task.result() if not wait_task.cancelled() else None
