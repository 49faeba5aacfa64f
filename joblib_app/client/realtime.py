"""The worker's Socket.IO contact: room membership, wake-ups and provider requests.

python-socketio starts threads of its own (the read and write loops, the reconnection, one
per received message). :class:`SocketLink` has them started through an
:class:`~joblib_app.client.threads.OwnedThreads`, so they are named ``joblib-socketio-...``
and :meth:`SocketLink.close` joins them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import socketio

from joblib_app.client.errors import JoblibClientError, ServerUnreachable
from joblib_app.client.http import backoff_delays
from joblib_app.client.threads import OwnedThreads

logger = logging.getLogger(__name__)


class RoomJoinError(JoblibClientError):
    """The server refused to let this connection enter or leave a room."""


def split_socketio_url(base_url: str) -> tuple[str, str]:
    """``(origin, socketio_path)`` for a sub-app mounted at ``base_url``.

    The Socket.IO endpoint lives under the mount point, so the path carries the prefix:
    ``http://h:8000/v1/joblib`` gives ``("http://h:8000", "v1/joblib/socket.io")``.
    """
    parts = urlsplit(base_url.rstrip("/"))
    origin = f"{parts.scheme}://{parts.netloc}"
    prefix = parts.path.strip("/")
    return origin, f"{prefix}/socket.io" if prefix else "socket.io"


class SocketLink:
    """One Socket.IO connection to the job server, reconnecting on its own.

    Callbacks run on python-socketio's threads and must not block for long.
    ``on_connect(first)`` is told whether this is the first connection or a reconnection;
    after a reconnection the server has forgotten this connection's rooms and worker.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        token: str | None,
        on_task_available: Callable[[dict[str, Any]], None],
        on_provider_request: Callable[[dict[str, Any]], None],
        on_connect: Callable[[bool], None],
        on_disconnect: Callable[[], None],
        call_timeout: float = 10.0,
        on_task_cancel_requested: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._origin, self._path = split_socketio_url(base_url)
        self._headers = dict(headers)
        self._auth = {"token": token} if token else None
        self._call_timeout = call_timeout
        self._connections = 0
        self._lock = threading.Lock()
        self._closed = False
        self._sio = socketio.Client(
            reconnection=True,
            reconnection_delay=0.5,
            reconnection_delay_max=2.0,
            logger=False,
            engineio_logger=False,
            # python-socketio's own SIGINT handler drops the connection at once, and a dropped
            # connection makes the server fail the task in flight; JobManager.wait() handles
            # signals gracefully instead.
            handle_sigint=False,
        )
        # engine.io starts every background task (its loops, python-socketio's reconnection,
        # one thread per received message) through this method: own them, to join on close.
        self._threads = OwnedThreads("socketio")
        self._sio.eio.start_background_task = self._threads.start

        def connect() -> None:
            with self._lock:
                self._connections += 1
                first = self._connections == 1
            logger.info("Socket.IO %s", "connected" if first else "reconnected")
            on_connect(first)

        def disconnect(*_reason: Any) -> None:
            if not self._closed:
                logger.warning("Socket.IO connection lost; reconnecting")
                on_disconnect()

        self._sio.on("connect", connect)
        self._sio.on("disconnect", disconnect)
        self._sio.on("task_available", on_task_available)
        self._sio.on("provider_request", on_provider_request)
        if on_task_cancel_requested is not None:
            self._sio.on("task_cancel_requested", on_task_cancel_requested)

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now."""
        return bool(self._sio.connected)

    def connect(self, *, retry_for: float | None, stop: threading.Event) -> None:
        """Open the connection, retrying with backoff for ``retry_for`` seconds (None: forever).

        Later drops are handled by python-socketio's own reconnection.
        """
        deadline = None if retry_for is None else time.monotonic() + retry_for
        for delay in backoff_delays(base=0.2, cap=5.0):
            try:
                self._sio.connect(
                    self._origin,
                    socketio_path=self._path,
                    headers=self._headers,
                    auth=self._auth,
                    transports=["websocket"],
                    wait_timeout=self._call_timeout,
                )
                return
            except socketio.exceptions.ConnectionError as exc:
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise ServerUnreachable(f"Socket.IO connect failed: {exc}") from exc
                logger.info("Socket.IO connect failed (%s); retrying in %.1fs", exc, delay)
                if stop.wait(delay):
                    raise ServerUnreachable("stopped while connecting Socket.IO") from exc

    def join_job(self, job_name: str, worker_id: str) -> None:
        """Enter ``jobs:{job_name}`` to hear ``task_available``."""
        self._call("join_job_room", {"job_name": job_name, "worker_id": worker_id})

    def leave_job(self, job_name: str, worker_id: str) -> None:
        """Leave ``jobs:{job_name}``."""
        self._call("leave_job_room", {"job_name": job_name, "worker_id": worker_id})

    def join_provider(self, provider_name: str, worker_id: str) -> None:
        """Enter ``providers:{provider_name}`` to hear ``provider_request``."""
        self._call("join_provider_room", {"provider_name": provider_name, "worker_id": worker_id})

    def leave_provider(self, provider_name: str, worker_id: str) -> None:
        """Leave ``providers:{provider_name}``."""
        self._call("leave_provider_room", {"provider_name": provider_name, "worker_id": worker_id})

    def _call(self, event: str, data: dict[str, Any]) -> None:
        try:
            answer = self._sio.call(event, data, timeout=self._call_timeout)
        except socketio.exceptions.SocketIOError as exc:
            raise RoomJoinError(f"{event} {data}: {exc!r}") from exc
        if not isinstance(answer, dict) or answer.get("status") != "ok":
            raise RoomJoinError(f"{event} {data} refused: {answer!r}")

    def close(self, join_timeout: float = 5.0) -> None:
        """Disconnect for good (no reconnection) and join python-socketio's threads.

        A message callback still running (a provider read) gets ``join_timeout`` s.
        """
        self._closed = True
        try:
            # Unlike disconnect(), shutdown() also ends a reconnection in progress.
            self._sio.shutdown()
        except Exception:
            # The connection may already be half torn down; there is nothing left to release.
            logger.debug("Socket.IO shutdown raised", exc_info=True)
        self._threads.join_all(join_timeout)
