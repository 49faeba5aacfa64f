"""Threads the SDK starts, each named ``joblib-...`` and owned until joined."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

THREAD_PREFIX = "joblib-"
"""Every thread a :class:`~joblib_app.client.JobManager` starts has a name with this prefix."""


class OwnedThreads:
    """Starts named daemon threads and joins the ones still running on :meth:`join_all`.

    Finished threads forget themselves, so an owner that starts one per event (the
    Socket.IO client starts one per message) does not accumulate them.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = f"{THREAD_PREFIX}{prefix}"
        self._lock = threading.Lock()
        self._running: set[threading.Thread] = set()
        self._count = 0

    def start(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> threading.Thread:
        """Start ``target(*args, **kwargs)`` on a thread of its own; returns the thread."""

        def run() -> None:
            try:
                target(*args, **kwargs)
            finally:
                with self._lock:
                    self._running.discard(thread)

        with self._lock:
            self._count += 1
            label = getattr(target, "__name__", "task").strip("_")
            thread = threading.Thread(
                target=run, name=f"{self._prefix}-{label}-{self._count}", daemon=True
            )
            self._running.add(thread)
        thread.start()
        return thread

    def running(self) -> list[threading.Thread]:
        """The threads started here that have not ended yet."""
        with self._lock:
            return [thread for thread in self._running if thread.is_alive()]

    def join_all(self, timeout: float) -> list[threading.Thread]:
        """Join every running thread but the caller's, within ``timeout`` s in all.

        Returns the threads still alive after that (logged: they run code that did not end).
        """
        deadline = time.monotonic() + timeout
        current = threading.current_thread()
        for thread in self.running():
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
        left = [thread for thread in self.running() if thread is not current]
        for thread in left:
            logger.warning("Thread %s did not end within %.1fs", thread.name, timeout)
        return left
