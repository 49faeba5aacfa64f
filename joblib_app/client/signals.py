"""Waiting for a manager to stop, with SIGINT and SIGTERM as graceful stop requests."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

# The main thread wakes this often while waiting, so that Python runs a signal handler
# promptly: a signal the OS delivered to another thread does not interrupt its wait.
_SIGNAL_CHECK_SECONDS = 0.1
_GRACEFUL = (signal.SIGINT, signal.SIGTERM)


def wait_for_stop(
    stopped: threading.Event, request_stop: Callable[[], None], timeout: float | None
) -> bool:
    """Block until ``stopped`` is set (or ``timeout``); returns whether it was.

    From the main thread, SIGINT and SIGTERM call ``request_stop`` instead of interrupting.
    The first such signal restores the previous handlers, so a second one interrupts at once.
    """
    restore: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            logger.info("Received %s, shutting down", signal.Signals(signum).name)
            for number, previous in restore.items():
                signal.signal(number, previous)
            request_stop()

        for number in _GRACEFUL:
            restore[number] = signal.getsignal(number)
            signal.signal(number, on_signal)
    try:
        return _wait_interruptibly(stopped, timeout)
    finally:
        for number, previous in restore.items():
            signal.signal(number, previous)


def _wait_interruptibly(event: threading.Event, timeout: float | None) -> bool:
    """``event.wait(timeout)`` in short slices."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = _SIGNAL_CHECK_SECONDS
        if deadline is not None:
            step = min(step, max(0.0, deadline - time.monotonic()))
        if event.wait(step):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
