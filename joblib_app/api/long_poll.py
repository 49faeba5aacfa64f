"""Long-polls: the claim long-poll's loop, and ending every long-poll when the server stops.

A claim long-poll listens on the channel of each job its worker serves and on the worker's
own channel, which says when the worker's jobs change (re-subscribe) or the worker is
deleted (answer ``404``). Every long-poll (claim, task read, provider read) also ends at
once when the server begins shutting down: uvicorn waits for open requests before it runs
the lifespan shutdown, and without ``--timeout-graceful-shutdown`` it waits as long as the
longest wait asked for.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, Final, TypeVar

from sqlalchemy import Row

from joblib_app.context import AppContext
from joblib_app.leases import ClientGone
from joblib_app.problems import worker_not_found
from joblib_app.realtime.events import Outbox, job_notify_channel
from joblib_app.realtime.notifier import Listener
from joblib_app.store import jobs, workers

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Waiters are woken by the notifier; this re-read only covers a lost notification.
SAFETY_RECHECK_SECONDS = 5.0
# Messages on a worker's channel (job channels carry task ids, which never equal these).
WORKER_DELETED: Final = "deleted"
WORKER_JOBS_CHANGED: Final = "jobs"
_STOPPING_KEY = "long_poll.stopping"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Stopping:
    """What a long-poll's wait answers when the server began shutting down."""

    def __repr__(self) -> str:
        return "STOPPING"


STOPPING: Final = _Stopping()


def worker_notify_channel(worker_id: str) -> str:
    """Notifier channel of one worker: its jobs changed, or it was deleted."""
    return f"worker:{worker_id}"


def notify_worker_jobs_changed(outbox: Outbox, worker_id: str) -> None:
    """Make the worker's open claim long-polls listen on its jobs again."""
    outbox.notify(worker_notify_channel(worker_id), WORKER_JOBS_CHANGED)


def notify_worker_deleted(outbox: Outbox, worker_id: str) -> None:
    """End the worker's open claim long-polls with ``404 worker-not-found``."""
    outbox.notify(worker_notify_channel(worker_id), WORKER_DELETED)


def _stopping_event(ctx: AppContext) -> asyncio.Event:
    event: asyncio.Event | None = ctx.extras.get(_STOPPING_KEY)
    if event is None:
        event = ctx.extras[_STOPPING_KEY] = asyncio.Event()
    return event


def reset_stopping(ctx: AppContext) -> None:
    """Let long-polls wait again: the app is (re)starting, perhaps on a new event loop."""
    ctx.extras[_STOPPING_KEY] = asyncio.Event()


def begin_stopping(ctx: AppContext) -> None:
    """End every open long-poll of this app now, and every later one at once."""
    event = _stopping_event(ctx)
    if not event.is_set():
        logger.info("joblib-app is stopping: open long-polls answer now")
        event.set()


async def until_stopping(ctx: AppContext, operation: Awaitable[T]) -> T | _Stopping:
    """``operation``'s result, or :data:`STOPPING` as soon as the server begins to stop."""
    stopping = _stopping_event(ctx)
    if stopping.is_set():
        # Not awaited: close it so that Python does not warn about a coroutine never awaited.
        close = getattr(operation, "close", None)
        if close is not None:
            close()
        return STOPPING
    work = asyncio.ensure_future(operation)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait((work, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
    if work.done() and not work.cancelled():
        return work.result()
    return STOPPING


class ShutdownSignals:
    """Chains the process's SIGTERM and SIGINT handlers to :func:`begin_stopping`.

    The server installed those handlers (uvicorn does before it starts the app); each is
    still called, after the app has been told. Only Python handlers are chained: with the
    default disposition nobody is serving, and the app leaves it alone.
    """

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
        self._installed: dict[int, Callable[[int, FrameType | None], None]] = {}

    def install(self) -> None:
        """Chain the handlers; a no-op outside the main thread (signals go there only)."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def chained(
                signum: int,
                frame: FrameType | None,
                previous: Callable[[int, FrameType | None], Any] = previous,
            ) -> None:
                loop.call_soon_threadsafe(begin_stopping, self._ctx)
                previous(signum, frame)

            signal.signal(sig, chained)
            self._previous[sig] = previous
            self._installed[sig] = chained

    def uninstall(self) -> None:
        """Put back the handlers this replaced, unless someone replaced them since."""
        previous, self._previous = self._previous, {}
        installed, self._installed = self._installed, {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in previous.items():
            if signal.getsignal(sig) is installed[sig]:
                signal.signal(sig, handler)


async def _wait(
    ctx: AppContext,
    listener: Listener,
    timeout: float,  # noqa: ASYNC109 - passed on to Listener.wait
    client: ClientGone | None,
) -> str | _Stopping | None:
    waiting = until_stopping(ctx, listener.wait(timeout))
    return await (waiting if client is None else client.race(waiting))


async def claim_long_poll(
    ctx: AppContext,
    worker_id: str,
    seconds: float,
    claim_once: Callable[[], Awaitable[Row | None]],
    *,
    client: ClientGone | None = None,
) -> Row | None:
    """Claim with ``claim_once`` as soon as a task is submitted for any of the worker's jobs.

    ``None`` when ``seconds`` pass, the server begins to stop, or ``client`` hangs up. A job
    the worker registers meanwhile is listened on from then on; the worker's deletion is
    ``404 worker-not-found``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        # One pass per set of the worker's jobs: re-read after a change, or after a quiet
        # safety period (a notification may have been lost).
        async with ctx.db.read() as conn:
            if await workers.get_worker(conn, worker_id) is None:
                raise worker_not_found(worker_id)
            names = await jobs.job_names_of_worker(conn, worker_id)
        channels = [job_notify_channel(n) for n in names]
        channels.append(worker_notify_channel(worker_id))
        async with ctx.notifier.listen(channels) as listener:
            while True:
                if client is not None and client.gone:
                    return None
                # Claim after subscribing, so a task submitted in between is not missed.
                row = await claim_once()
                remaining = deadline - loop.time()
                if row is not None or remaining <= 0:
                    return row
                message = await _wait(ctx, listener, min(remaining, SAFETY_RECHECK_SECONDS), client)
                if message is STOPPING:
                    return None
                if message == WORKER_DELETED:
                    raise worker_not_found(worker_id)
                if message is None or message == WORKER_JOBS_CHANGED:
                    break
