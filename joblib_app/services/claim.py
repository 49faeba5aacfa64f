"""Claiming: the oldest pending task of a worker's jobs, at once or as soon as one comes.

Claims that never reached their worker go back to the head of their queue. A claim's
answer can be lost (dropped connection, client timeout, a worker killed while its
long-poll was open); the task then stays ``claimed`` by a worker that will never start it.
Two paths return it to pending, keeping its place (its ``seq``) and using no attempt: the
claim long-poll, when it sees its client gone (:func:`release_undelivered_claim`), and the
sweeper, for claims older than ``claim_lease_seconds`` (:func:`requeue_expired_claims`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from joblib_app.context import AppContext
from joblib_app.domain.errors import WorkerNotFound
from joblib_app.domain.names import is_plain_id
from joblib_app.principal import Principal
from joblib_app.realtime.events import job_notify_channel
from joblib_app.realtime.notifier import Listener
from joblib_app.services.access import owned_worker
from joblib_app.services.events import (
    WORKER_DELETED,
    WORKER_JOBS_CHANGED,
    announce_changes,
    announce_pending,
    worker_notify_channel,
)
from joblib_app.services.rows import Record
from joblib_app.services.stopping import STOPPING, Stopping, until_stopping
from joblib_app.store import jobs, tasks, workers

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Waiters are woken by the notifier; this re-read only covers a lost notification.
SAFETY_RECHECK_SECONDS = 5.0


class ClientWatch(Protocol):
    """Whether the client of a waiting request hung up (see ``api.hangup.ClientGone``)."""

    @property
    def gone(self) -> bool: ...

    async def race(self, waiting: Awaitable[T]) -> T | None:
        """``waiting``'s result, or ``None`` (``waiting`` cancelled) if the client goes first."""
        ...


async def claim_once(
    ctx: AppContext, worker_id: str, *, owner: Principal | None = None
) -> Record | None:
    """Claim the oldest pending task of ``worker_id``'s jobs, or ``None``.

    With ``owner``, the worker must be theirs (``404``/``403`` when nothing was claimed).
    """
    if owner is not None and not is_plain_id(worker_id):
        # Longer than any worker id: PostgreSQL would refuse it as the claim's new value.
        raise WorkerNotFound(worker_id)
    # The claim is one atomic statement, which checks the owner too; only when nothing was
    # claimed is the worker read, to tell "not yours" (403/404) from "nothing pending".
    async with ctx.db.autocommit() as conn:
        owner_id = owner.id if owner is not None else None
        row = await tasks.claim_next(conn, worker_id, owner_id=owner_id)
        if row is None and owner is not None:
            await owned_worker(conn, owner, worker_id, action="claim tasks with it")
    if row is not None:
        await announce_changes(ctx, [row])
    return row


async def claim_waiting(
    ctx: AppContext, worker_id: str, seconds: float, *, client: ClientWatch | None = None
) -> Record | None:
    """Claim as soon as a task is submitted for any of the worker's jobs (in any server
    process), within ``seconds``.

    ``None`` when ``seconds`` pass, the server begins to stop, or ``client`` hangs up; a
    task claimed for a client that hung up meanwhile is put back. A job the worker
    registers meanwhile is listened on from then on; the worker's deletion is ``404``.
    """
    row = await _claim_long_poll(ctx, worker_id, seconds, client)
    if row is not None and client is not None and client.gone:
        await release_undelivered_claim(ctx, row)
        return None
    return row


async def _wait(
    ctx: AppContext,
    listener: Listener,
    timeout: float,  # noqa: ASYNC109 - passed on to Listener.wait
    client: ClientWatch | None,
) -> str | Stopping | None:
    waiting = until_stopping(ctx, listener.wait(timeout))
    return await (waiting if client is None else client.race(waiting))


async def _claim_long_poll(
    ctx: AppContext, worker_id: str, seconds: float, client: ClientWatch | None
) -> Record | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        # One pass per set of the worker's jobs: re-read after a change, or after a quiet
        # safety period (a notification may have been lost).
        async with ctx.db.read() as conn:
            if await workers.get_worker(conn, worker_id) is None:
                raise WorkerNotFound(worker_id)
            names = await jobs.job_names_of_worker(conn, worker_id)
        channels = [job_notify_channel(n) for n in names]
        channels.append(worker_notify_channel(worker_id))
        async with ctx.notifier.listen(channels) as listener:
            while True:
                if client is not None and client.gone:
                    return None
                # Claim after subscribing, so a task submitted in between is not missed.
                row = await claim_once(ctx, worker_id)
                remaining = deadline - loop.time()
                if row is not None or remaining <= 0:
                    return row
                message = await _wait(ctx, listener, min(remaining, SAFETY_RECHECK_SECONDS), client)
                if message is STOPPING:
                    return None
                if message == WORKER_DELETED:
                    raise WorkerNotFound(worker_id)
                if message is None or message == WORKER_JOBS_CHANGED:
                    break


async def release_undelivered_claim(ctx: AppContext, row: Record) -> None:
    """Undo a claim whose client went away before the answer could reach it."""
    async with ctx.db.write() as conn:
        released = await tasks.release_claim(conn, row.id, row.worker_id)
    if released is not None:
        logger.info("Task %s returned to its queue: its claimer went away", row.id)
        await announce_pending(ctx, [released])


async def requeue_expired_claims(ctx: AppContext, now: datetime) -> list[Record]:
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
    return list(rows)
