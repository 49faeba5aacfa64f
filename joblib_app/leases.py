"""Claims that never reached their worker go back to the head of their queue.

A claim's answer can be lost (dropped connection, client timeout, a worker killed while its
long-poll was open). The task then stays ``claimed`` by a worker that will never start it.
Two paths return it to pending, keeping its place (its ``seq``) and using no attempt: the
claim long-poll, when it sees its client gone, and the sweeper, for claims older than
``claim_lease_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Row
from starlette.types import Receive

from joblib_app.context import AppContext
from joblib_app.realtime.events import Outbox, TaskAvailable, job_notify_channel, jobs_channel
from joblib_app.store import tasks
from joblib_app.views import record_task_change

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def announce_pending(ctx: AppContext, rows: Sequence[Row]) -> None:
    """Events for tasks back in pending (lease, lost worker, timeout): their status,
    ``task_available``, and the wake-up of claim long-polls."""
    if not rows:
        return
    async with ctx.db.read() as conn:
        positions = await tasks.queue_positions(conn, rows)
    outbox = Outbox()
    for row in rows:
        record_task_change(outbox, row, positions)
        outbox.emit(
            TaskAvailable(job_name=row.job_name, room_id=row.room_id, task_id=row.id),
            jobs_channel(row.job_name),
        )
        outbox.notify(job_notify_channel(row.job_name), row.id)
    await ctx.dispatch(outbox)


async def requeue_expired_claims(ctx: AppContext, now: datetime) -> list[Row]:
    """The sweeper's part: claims older than ``claim_lease_seconds`` not started since."""
    cutoff = now - timedelta(seconds=ctx.settings.claim_lease_seconds)
    async with ctx.db.write() as conn:
        rows = await tasks.requeue_expired_claims(conn, cutoff)
    if rows:
        logger.warning(
            "Returned %d task(s) to their queue: claimed more than %g s ago, never started",
            len(rows),
            ctx.settings.claim_lease_seconds,
        )
        await announce_pending(ctx, rows)
    return rows


async def release_undelivered_claim(ctx: AppContext, row: Row) -> None:
    """Undo a claim whose client went away before the answer could reach it."""
    async with ctx.db.write() as conn:
        released = await tasks.release_claim(conn, row.id, row.worker_id)
    if released is not None:
        logger.info("Task %s returned to its queue: its claimer went away", row.id)
        await announce_pending(ctx, [released])


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
