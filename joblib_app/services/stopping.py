"""Ending every long-poll, and every Socket.IO session, when the server stops.

uvicorn waits for open requests before it runs the lifespan shutdown, and without
``--timeout-graceful-shutdown`` it waits as long as the longest wait asked for. So every
long-poll (claim, task read, provider read) races its wait against this app's stop signal.
A Socket.IO client on the polling transport holds a request open too, up to the ping
interval (25 s by default): its session is closed at the same signal, as uvicorn closes
WebSocket ones.
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
_CLOSING_SESSIONS_KEY = "stopping.closing_sessions"
# A session's close waits until its client has taken the close packet; one that never
# polls again is not waited for longer than this.
SESSIONS_CLOSE_SECONDS = 2.0
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
    """Let long-polls wait again: the app is (re)starting, perhaps on a new event loop."""
    ctx.extras[_STOPPING_KEY] = asyncio.Event()


def begin_stopping(ctx: AppContext) -> None:
    """End every open long-poll of this app now, and every later one at once; start
    closing this process's Socket.IO sessions (awaited by :func:`sessions_closed`)."""
    event = _stopping_event(ctx)
    if not event.is_set():
        logger.info("joblib-app is stopping: open long-polls answer now, Socket.IO sessions close")
        event.set()
        ctx.extras[_CLOSING_SESSIONS_KEY] = asyncio.get_running_loop().create_task(
            _close_sessions(ctx), name="joblib-close-socketio-sessions"
        )


async def _close_sessions(ctx: AppContext) -> None:
    try:
        async with asyncio.timeout(SESSIONS_CLOSE_SECONDS):
            await ctx.sio.eio.disconnect()
    except TimeoutError:
        logger.info("Socket.IO sessions not closed within %g s: left", SESSIONS_CLOSE_SECONDS)
    except Exception:
        logger.exception("Could not close the Socket.IO sessions")


async def sessions_closed(ctx: AppContext) -> None:
    """Return once the sessions :func:`begin_stopping` began closing are closed (or left)."""
    closing: asyncio.Task[None] | None = ctx.extras.pop(_CLOSING_SESSIONS_KEY, None)
    if closing is not None:
        await closing


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
