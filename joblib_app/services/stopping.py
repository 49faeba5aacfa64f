"""Ending every long-poll, and every Socket.IO polling session, when the server stops.

uvicorn waits for open requests before it runs the lifespan shutdown, and without
``--timeout-graceful-shutdown`` it waits as long as the longest wait asked for. So every
long-poll (claim, task read, provider read) races its wait against this app's stop signal.
A Socket.IO client on the polling transport holds a request open too, up to the ping
interval (25 s by default): it is released at the same signal, and its client reconnects
as a WebSocket client does when uvicorn closes its socket.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, Final, TypeVar

from joblib_app.context import AppContext

logger = logging.getLogger(__name__)

T = TypeVar("T")

_STOPPING_KEY = "long_poll.stopping"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopping:
    """What a long-poll's wait answers when the server began shutting down."""

    def __repr__(self) -> str:
        return "STOPPING"


STOPPING: Final = Stopping()


def _stopping_event(ctx: AppContext) -> asyncio.Event:
    event: asyncio.Event | None = ctx.extras.get(_STOPPING_KEY)
    if event is None:
        event = ctx.extras[_STOPPING_KEY] = asyncio.Event()
    return event


def reset_stopping(ctx: AppContext) -> None:
    """Let long-polls wait and Socket.IO sessions open again: the app is (re)starting,
    perhaps on a new event loop."""
    ctx.extras[_STOPPING_KEY] = asyncio.Event()
    ctx.sio.accept_sessions()


def begin_stopping(ctx: AppContext) -> None:
    """End every open long-poll of this app now, and every later one at once; refuse new
    Socket.IO sessions and end the polling ones (see ``JoblibSocketServer.stop_sessions``)."""
    event = _stopping_event(ctx)
    if not event.is_set():
        event.set()
        released = ctx.sio.stop_sessions()
        logger.info(
            "joblib-app is stopping: open long-polls answer now, %d Socket.IO polling "
            "session(s) ended, no new session accepted",
            released,
        )


async def until_stopping(ctx: AppContext, operation: Awaitable[T]) -> T | Stopping:
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
