"""The Socket.IO server of the sub-app: authentication, room joins, cleanup on disconnect."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import socketio
from starlette.requests import HTTPConnection

from joblib_app.context import AppContext
from joblib_app.domain.names import is_plain_id
from joblib_app.models import utcnow
from joblib_app.names import parse_full_name, validate_room_id
from joblib_app.principal import Principal
from joblib_app.problems import ProblemError
from joblib_app.realtime.events import (
    jobs_channel,
    providers_channel,
    room_channel,
    worker_channel,
)
from joblib_app.realtime.redis_guard import BoundedRedisManager
from joblib_app.store import jobs, providers, workers

logger = logging.getLogger(__name__)

Answer = dict[str, Any]
_OK: Answer = {"status": "ok"}


def _error(detail: str) -> Answer:
    return {"status": "error", "detail": detail}


class JoblibSocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, hardened against what a client can send.

    - python-socketio dispatches a client-sent *event* named ``connect`` or ``disconnect``
      to the handlers of those names, with arguments the client chose: a forged
      ``connect`` would re-authenticate the connection from a client-made environ, a forged
      ``disconnect`` would clean up its workers while it stays open. Such events are
      dropped; only the protocol's own CONNECT and DISCONNECT packets reach the handlers.
    - An engine.io session that has not connected a namespace within ``connect_timeout``
      seconds (it never authenticated, or was refused) is closed, so idle sessions cannot
      pile up.
    """

    RESERVED_CLIENT_EVENTS = frozenset({"connect", "disconnect", "connect_error"})

    def __init__(self, *, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connect_timeout = connect_timeout
        self._connect_timers: dict[str, asyncio.Task[None]] = {}

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        if data and isinstance(data[0], str) and data[0] in self.RESERVED_CLIENT_EVENTS:
            logger.warning(
                "Ignored a client-sent '%s' event on engine.io session %s", data[0], eio_sid
            )
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        await super()._handle_eio_connect(eio_sid, environ)
        self._connect_timers[eio_sid] = asyncio.create_task(
            self._close_if_unconnected(eio_sid), name=f"joblib-sio-connect-timeout-{eio_sid}"
        )

    async def _handle_eio_disconnect(self, eio_sid: str, *args: Any) -> None:
        timer = self._connect_timers.pop(eio_sid, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        await super()._handle_eio_disconnect(eio_sid, *args)

    async def _close_if_unconnected(self, eio_sid: str) -> None:
        await asyncio.sleep(self.connect_timeout)
        if self.manager.sid_from_eio_sid(eio_sid, "/") is not None:
            self._connect_timers.pop(eio_sid, None)
            return
        logger.info(
            "Closing engine.io session %s: no namespace connected within %g s",
            eio_sid,
            self.connect_timeout,
        )
        socket = self.eio.sockets.get(eio_sid)
        await self.eio.disconnect(eio_sid)
        if socket is not None:
            # Wakes engine.io's websocket writer, which closes the websocket; it would
            # otherwise wait ping_interval + ping_timeout for a packet before doing so.
            await socket.queue.put(None)


def create_socketio_server(
    *,
    redis_url: str | None,
    channel: str,
    cors_allowed_origins: str | list[str] | None,
    connect_timeout: float,
    redis_timeout: float = 2.0,
) -> socketio.AsyncServer:
    """A python-socketio server; with ``redis_url`` its emits reach every server process
    (through a manager whose Redis calls are bounded by ``redis_timeout``).

    ``cors_allowed_origins`` ``None`` accepts same-origin connections only.
    """
    manager = (
        BoundedRedisManager(redis_url, channel=channel, timeout=redis_timeout)
        if redis_url is not None
        else None
    )
    return JoblibSocketServer(
        connect_timeout=connect_timeout,
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=cors_allowed_origins,
        logger=False,
        engineio_logger=False,
    )


def _connection_for(environ: dict[str, Any], auth: Any) -> HTTPConnection:
    """An ``HTTPConnection`` over the handshake, with an ``auth`` token as a bearer header."""
    scope = dict(environ.get("asgi.scope") or {})
    scope.setdefault("type", "http")
    headers = list(scope.get("headers") or [])
    token = auth.get("token") if isinstance(auth, dict) else None
    has_authorization = any(name.lower() == b"authorization" for name, _ in headers)
    if token and not has_authorization:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope["headers"] = headers
    return HTTPConnection(scope)


def install_handlers(sio: socketio.AsyncServer, get_ctx: Callable[[], AppContext]) -> None:
    """Wire connect/disconnect and the room events onto ``sio``."""

    async def principal_of(sid: str) -> Principal | None:
        session = await sio.get_session(sid)
        return session.get("principal")

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        principal = await get_ctx().config.authenticate(_connection_for(environ, auth))
        if principal is None:
            raise socketio.exceptions.ConnectionRefusedError("Authentication required")
        await sio.save_session(sid, {"principal": principal, "workers": set()})

    @sio.event
    async def disconnect(sid: str, *args: Any) -> None:
        session = await sio.get_session(sid)
        worker_ids: set[str] = session.get("workers") or set()
        if worker_ids:
            get_ctx().reconnects.connection_dropped(get_ctx(), worker_ids)

    async def owned_worker(sid: str, data: Any) -> tuple[Principal, str] | Answer:
        principal = await principal_of(sid)
        if principal is None:
            return _error("Not authenticated")
        worker_id = data.get("worker_id") if isinstance(data, dict) else None
        if not isinstance(worker_id, str):
            return _error("worker_id is required")
        if not is_plain_id(worker_id):
            return _error(f"Worker {worker_id[:40]!r} not found")
        async with get_ctx().db.read() as conn:
            worker = await workers.get_worker(conn, worker_id)
        if worker is None or worker.user_id != principal.id:
            return _error(f"Worker '{worker_id}' not found")
        return principal, worker_id

    async def remember(sid: str, worker_id: str) -> None:
        async with sio.session(sid) as session:
            session["workers"].add(worker_id)
        # Where task_cancel_requested for this worker's tasks goes: this connection only.
        await sio.enter_room(sid, worker_channel(worker_id))
        # A sign of life: a cleanup pending from this worker's dropped connection spares it.
        async with get_ctx().db.write() as conn:
            await workers.touch_worker(conn, worker_id, utcnow())

    @sio.on("join_job_room")
    async def join_job_room(sid: str, data: Any) -> Answer:
        checked = await owned_worker(sid, data)
        if isinstance(checked, dict):
            return checked
        _, worker_id = checked
        job_name = data.get("job_name")
        if not isinstance(job_name, str):
            return _error("job_name is required")
        async with get_ctx().db.read() as conn:
            served = await jobs.job_names_of_worker(conn, worker_id)
        if job_name not in served:
            return _error(f"Worker '{worker_id}' does not serve job '{job_name}'")
        await sio.enter_room(sid, jobs_channel(job_name))
        await remember(sid, worker_id)
        return _OK

    @sio.on("leave_job_room")
    async def leave_job_room(sid: str, data: Any) -> Answer:
        checked = await owned_worker(sid, data)
        if isinstance(checked, dict):
            return checked
        job_name = data.get("job_name")
        if isinstance(job_name, str):
            await sio.leave_room(sid, jobs_channel(job_name))
        return _OK

    @sio.on("join_provider_room")
    async def join_provider_room(sid: str, data: Any) -> Answer:
        checked = await owned_worker(sid, data)
        if isinstance(checked, dict):
            return checked
        _, worker_id = checked
        name = data.get("provider_name")
        if not isinstance(name, str):
            return _error("provider_name is required")
        if parse_full_name(name) is None:
            return _error(f"Worker '{worker_id}' does not serve provider {name[:40]!r}")
        async with get_ctx().db.read() as conn:
            provider = await providers.get_provider_by_name(conn, name)
        if provider is None or provider.worker_id != worker_id:
            return _error(f"Worker '{worker_id}' does not serve provider '{name}'")
        await sio.enter_room(sid, providers_channel(name))
        await remember(sid, worker_id)
        return _OK

    @sio.on("leave_provider_room")
    async def leave_provider_room(sid: str, data: Any) -> Answer:
        checked = await owned_worker(sid, data)
        if isinstance(checked, dict):
            return checked
        name = data.get("provider_name")
        if isinstance(name, str):
            await sio.leave_room(sid, providers_channel(name))
        return _OK

    @sio.on("join_room")
    async def join_room(sid: str, data: Any) -> Answer:
        """Follow ``room:{room_id}`` (frontends), if ``can_read_room`` allows."""
        principal = await principal_of(sid)
        room_id = data.get("room_id") if isinstance(data, dict) else None
        if principal is None or not isinstance(room_id, str):
            return _error("room_id is required")
        try:
            validate_room_id(room_id)
        except ProblemError as exc:
            return _error(exc.detail)
        guard = get_ctx().config.can_read_room
        if guard is not None and not await guard(principal, room_id):
            return _error(f"Not allowed to follow room '{room_id}'")
        await sio.enter_room(sid, room_channel(room_id))
        return _OK

    @sio.on("leave_room")
    async def leave_room(sid: str, data: Any) -> Answer:
        room_id = data.get("room_id") if isinstance(data, dict) else None
        if isinstance(room_id, str):
            await sio.leave_room(sid, room_channel(room_id))
        return _OK
