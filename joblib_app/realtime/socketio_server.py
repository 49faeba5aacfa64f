"""The Socket.IO server of the sub-app and its namespace: authentication, room joins,
cleanup on disconnect. The namespace's methods call the services."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import engineio
import socketio
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse

from joblib_app.context import AppContext
from joblib_app.domain.errors import ProblemError
from joblib_app.domain.names import validate_room_id
from joblib_app.principal import Principal
from joblib_app.realtime.events import (
    jobs_channel,
    providers_channel,
    room_channel,
    worker_channel,
)
from joblib_app.realtime.redis_guard import BoundedRedisManager
from joblib_app.services import workers as worker_service
from joblib_app.services.access import may_read_room

logger = logging.getLogger(__name__)

Answer = dict[str, Any]
_OK: Answer = {"status": "ok"}
_Handler = Callable[[Any, str, Any], Awaitable[None]]


class _Refused(ProblemError):
    """A refusal that only a Socket.IO answer shows (a missing field)."""

    def __init__(self, detail: str) -> None:
        super().__init__(400, "socketio-refused", detail)


def _answering(handler: _Handler) -> Callable[[Any, str, Any], Awaitable[Answer]]:
    """Answer ``{"status": "ok"}``, or ``{"status": "error", "detail"}`` for a problem."""

    @functools.wraps(handler)
    async def answer(self: Any, sid: str, data: Any) -> Answer:
        try:
            await handler(self, sid, data)
        except ProblemError as exc:
            return {"status": "error", "detail": exc.detail}
        return _OK

    return answer


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
        self._releasing: set[asyncio.Task[None]] = set()
        # The engine.io sockets with a polling GET in progress, and how many.
        self._held_polls: Counter[Any] = Counter()
        # False from :meth:`stop_sessions` until :meth:`accept_sessions`.
        self.accepting_sessions = True

    async def handle_request(self, scope: Any, receive: Any, send: Any) -> Any:
        """engine.io's request handling; a polling GET is counted while it is held.

        While the server is stopping, a polling request of a session it no longer has (one
        :meth:`stop_sessions` ended) is refused here: engine.io would refuse it the same
        way (400) but log an ERROR, although the stop ended it and said so.
        """
        sid = _polling_sid(scope)
        if sid is not None and not self.accepting_sessions and sid not in self.eio.sockets:
            # The same answer engine.io gives an unknown session.
            await _ENDED_SESSION(scope, receive, send)
            return None
        socket = self.eio.sockets.get(sid) if scope.get("method") == "GET" else None
        if socket is None:
            return await super().handle_request(scope, receive, send)
        self._held_polls[socket] += 1
        try:
            return await super().handle_request(scope, receive, send)
        finally:
            self._held_polls[socket] -= 1
            if self._held_polls[socket] <= 0:
                del self._held_polls[socket]

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        if data and isinstance(data[0], str) and data[0] in self.RESERVED_CLIENT_EVENTS:
            logger.warning(
                "Ignored a client-sent '%s' event on engine.io session %s", data[0], eio_sid
            )
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> bool | None:
        if not self.accepting_sessions:
            # The server is stopping: a session opened now would hold a poll open again.
            # engine.io answers 401 and the client tries again later, elsewhere or here.
            return False
        await super()._handle_eio_connect(eio_sid, environ)
        self._connect_timers[eio_sid] = asyncio.create_task(
            self._close_if_unconnected(eio_sid), name=f"joblib-sio-connect-timeout-{eio_sid}"
        )
        return None

    async def _handle_eio_disconnect(self, eio_sid: str, *args: Any) -> None:
        timer = self._connect_timers.pop(eio_sid, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        socket = self.eio.sockets.get(eio_sid)
        try:
            await super()._handle_eio_disconnect(eio_sid, *args)
        finally:
            if socket is not None and socket in self._held_polls:
                # engine.io leaves the poll of a closed session held until its ping
                # timeout (45 s by default): the client, and a server that waits for open
                # requests to stop, would wait that long. engine.io marks the session
                # closed right after this returns, with no await between: the client's
                # next poll finds it closed.
                _answer_poll(socket)

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

    def accept_sessions(self) -> None:
        """Open new sessions again (the app starts, or starts again)."""
        self.accepting_sessions = True

    def stop_sessions(self) -> int:
        """Refuse new sessions; end this process's polling ones as a lost transport.

        Returns how many polling sessions were ended. A polling client holds a GET open for
        up to the ping interval, and a server that waits for open requests before it stops
        (plain uvicorn) waits for it. Each session is closed without a close packet (its
        disconnect handlers run, as for a dropped connection), and its held GET answered
        with a no-op; the client's next poll is refused (400), which it takes as a lost
        transport: it reconnects, as a WebSocket client does when the server closes
        its socket on shutdown (1012). A close packet would tell the client it was
        disconnected on purpose, and it would not reconnect. New sessions are refused
        (401), so a quick reconnection cannot hold a poll open again. WebSocket sessions
        are left to the server.
        """
        self.accepting_sessions = False
        polling = [
            socket
            for socket in self.eio.sockets.values()
            if not (socket.upgraded or socket.closing or socket.closed)
        ]
        for socket in polling:
            task = asyncio.create_task(
                self._release(socket), name=f"joblib-sio-release-{socket.sid}"
            )
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
        return len(polling)

    async def _release(self, socket: Any) -> None:
        try:
            await socket.close(wait=False, abort=True, reason=self.eio.reason.TRANSPORT_CLOSE)
        except Exception:
            logger.exception("Disconnect handlers of Socket.IO session %s failed", socket.sid)


def _answer_poll(socket: Any) -> None:
    """Answer ``socket``'s held poll with a no-op (as engine.io does on an upgrade)."""
    socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.NOOP))


def _polling_sid(scope: Any) -> str | None:
    """The engine.io session id of a polling request (GET or POST), if ``scope`` is one."""
    if scope.get("type") != "http":
        return None
    query: dict[str, list[str]] = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("transport") != ["polling"] or "sid" not in query:
        return None
    return query["sid"][0]


_ENDED_SESSION = PlainTextResponse("Session ended: the server is stopping", status_code=400)


def create_socketio_server(
    *,
    redis_url: str | None,
    channel: str,
    cors_allowed_origins: str | list[str] | None,
    connect_timeout: float,
    redis_timeout: float = 2.0,
) -> JoblibSocketServer:
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


class JoblibNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """The ``/`` namespace: authentication, room joins, cleanup on disconnect.

    Every method checks its input and calls a service; an error of the services (a
    :class:`ProblemError`) is answered as ``{"status": "error", "detail": ...}``.
    """

    def __init__(self, get_ctx: Callable[[], AppContext], namespace: str = "/") -> None:
        super().__init__(namespace)
        self._get_ctx = get_ctx

    @classmethod
    def client_events(cls) -> frozenset[str]:
        """The events a client may send (``connect`` and ``disconnect`` are the protocol's)."""
        handled = {name.removeprefix("on_") for name in dir(cls) if name.startswith("on_")}
        return frozenset(handled - {"connect", "disconnect"})

    async def _principal(self, sid: str) -> Principal | None:
        session = await self.get_session(sid)
        principal: Principal | None = session.get("principal")
        return principal

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Authenticate the handshake (header, or the ``auth`` token); refuse without."""
        principal = await self._get_ctx().config.authenticate(_connection_for(environ, auth))
        if principal is None:
            raise socketio.exceptions.ConnectionRefusedError("Authentication required")
        await self.save_session(sid, {"principal": principal, "workers": set()})

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """The workers this connection attached are cleaned up after the grace period."""
        session = await self.get_session(sid)
        worker_ids: set[str] = session.get("workers") or set()
        if worker_ids:
            ctx = self._get_ctx()
            ctx.reconnects.connection_dropped(ctx, worker_ids)

    async def _worker(self, sid: str, data: Any) -> str:
        """The caller's worker named by ``data["worker_id"]`` (see ``connection_worker``)."""
        principal = await self._principal(sid)
        if principal is None:
            raise _Refused("Not authenticated")
        worker_id = data.get("worker_id") if isinstance(data, dict) else None
        if not isinstance(worker_id, str):
            raise _Refused("worker_id is required")
        return await worker_service.connection_worker(self._get_ctx(), principal, worker_id)

    async def _attach(self, sid: str, worker_id: str, channel: str) -> None:
        await self.enter_room(sid, channel)
        async with self.session(sid) as session:
            session["workers"].add(worker_id)
        # Where task_cancel_requested for this worker's tasks goes: this connection only.
        await self.enter_room(sid, worker_channel(worker_id))
        await worker_service.worker_seen(self._get_ctx(), worker_id)

    @_answering
    async def on_join_job_room(self, sid: str, data: Any) -> None:
        """A worker's connection follows ``task_available`` of a job it serves."""
        worker_id = await self._worker(sid, data)
        job_name = data.get("job_name")
        if not isinstance(job_name, str):
            raise _Refused("job_name is required")
        await worker_service.check_serves_job(self._get_ctx(), worker_id, job_name)
        await self._attach(sid, worker_id, jobs_channel(job_name))

    @_answering
    async def on_leave_job_room(self, sid: str, data: Any) -> None:
        await self._worker(sid, data)
        job_name = data.get("job_name")
        if isinstance(job_name, str):
            await self.leave_room(sid, jobs_channel(job_name))

    @_answering
    async def on_join_provider_room(self, sid: str, data: Any) -> None:
        """A worker's connection follows ``provider_request`` of a provider it serves."""
        worker_id = await self._worker(sid, data)
        name = data.get("provider_name")
        if not isinstance(name, str):
            raise _Refused("provider_name is required")
        await worker_service.check_serves_provider(self._get_ctx(), worker_id, name)
        await self._attach(sid, worker_id, providers_channel(name))

    @_answering
    async def on_leave_provider_room(self, sid: str, data: Any) -> None:
        await self._worker(sid, data)
        name = data.get("provider_name")
        if isinstance(name, str):
            await self.leave_room(sid, providers_channel(name))

    @_answering
    async def on_join_room(self, sid: str, data: Any) -> None:
        """Follow ``room:{room_id}`` (frontends), if ``can_read_room`` allows."""
        principal = await self._principal(sid)
        room_id = data.get("room_id") if isinstance(data, dict) else None
        if principal is None or not isinstance(room_id, str):
            raise _Refused("room_id is required")
        validate_room_id(room_id)
        if not await may_read_room(self._get_ctx(), principal, room_id):
            raise _Refused(f"Not allowed to follow room '{room_id}'")
        await self.enter_room(sid, room_channel(room_id))

    @_answering
    async def on_leave_room(self, sid: str, data: Any) -> None:
        room_id = data.get("room_id") if isinstance(data, dict) else None
        if isinstance(room_id, str):
            await self.leave_room(sid, room_channel(room_id))


def install_handlers(sio: socketio.AsyncServer, get_ctx: Callable[[], AppContext]) -> None:
    """Register :class:`JoblibNamespace` on ``sio``."""
    sio.register_namespace(JoblibNamespace(get_ctx))
