"""Socket.IO clients of the suite: an event log that follows rooms, and a room barrier."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import httpx
import socketio

from tests.support.api import submit
from tests.support.names import ALICE, new_room
from tests.support.waiting import wait_until

EVENT_TIMEOUT = 5.0

Event = tuple[str, Any]


class Reachable(Protocol):
    """What a Socket.IO client needs of a server: its origin and the app's mount path."""

    @property
    def origin(self) -> str: ...

    @property
    def mount(self) -> str: ...


def socketio_path(server: Reachable) -> str:
    """The Socket.IO path of the mounted sub-app, as python-socketio's client wants it."""
    return server.mount.strip("/") + "/socket.io"


class EventLog:
    """A Socket.IO client that records every event it receives, in order."""

    def __init__(self, transport: str = "websocket") -> None:
        """A client for ``transport``: ``websocket`` or ``polling``."""
        self.transport = transport
        # A polling client's HTTP session is ours rather than python-engineio's: on an
        # error status (a session the server ended) engine.io's client closes its own
        # session at once without reading the answer, whose body may still be on its way;
        # aiohttp then finalizes that connection unreleased, a ResourceWarning at a later
        # garbage collection, which failed whichever test ran then. Ours stays open until
        # :meth:`disconnect`, so the answer completes and releases its connection.
        self._http = aiohttp.ClientSession() if transport == "polling" else None
        self.client = socketio.AsyncClient(reconnection=False, http_session=self._http)
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        # Called with each event as it arrives, after it is recorded.
        self.hooks: list[Callable[[str, Any], Awaitable[None]]] = []
        self.client.on("*", self._record)

    async def _record(self, name: str, data: Any) -> None:
        async with self._changed:
            self.events.append((name, data))
            self._changed.notify_all()
        for hook in self.hooks:
            await hook(name, data)

    async def connect(
        self,
        server: Reachable,
        token: str | None,
        *,
        in_header: bool = False,
    ) -> EventLog:
        """Connect, with the token in the auth payload or in the headers."""
        kwargs: dict[str, Any] = {}
        if token is not None and in_header:
            kwargs["headers"] = {"Authorization": f"Bearer {token}"}
        elif token is not None:
            kwargs["auth"] = {"token": token}
        try:
            await self.client.connect(
                server.origin,
                socketio_path=socketio_path(server),
                transports=[self.transport],
                wait_timeout=10,
                **kwargs,
            )
        except BaseException:
            await self.disconnect()
            raise
        return self

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Emit a client event and return the server's acknowledgement."""
        answer: dict[str, Any] = await self.client.call(event, data, timeout=EVENT_TIMEOUT)
        return answer

    async def join_room(self, room_id: str) -> None:
        """Follow ``room:{room_id}`` as a frontend; the server must accept."""
        answer = await self.call("join_room", {"room_id": room_id})
        assert answer == {"status": "ok"}, answer

    def named(self, name: str) -> list[Any]:
        """Payloads of the events received so far named ``name``, in arrival order."""
        return [data for event, data in self.events if event == name]

    def statuses(self, task_id: str) -> list[str]:
        """The statuses of ``task_status_event`` received so far for ``task_id``."""
        return [data["status"] for data in self.matching("task_status_event", id=task_id)]

    async def wait_for_count(self, name: str, count: int = 1, within: float = 10.0) -> list[Any]:
        """Payloads of events named ``name`` once at least ``count`` arrived."""
        await wait_until(lambda: len(self.named(name)) >= count, within, f"{count} {name}")
        return self.named(name)

    async def wait_for_status(self, task_id: str, status: str, within: float = 20) -> None:
        """Return once a ``task_status_event`` of ``task_id`` said ``status``."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: status in self.statuses(task_id)), within
            )

    def matching(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        """Payloads of the events received so far named ``name`` whose fields match."""
        return [
            data
            for event, data in self.events
            if event == name and all(data.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(
        self, name: str, within: float = EVENT_TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        """The first event named ``name`` with these fields, waiting up to ``within`` s."""
        found: list[dict[str, Any]] = []

        def ready() -> bool:
            found[:] = self.matching(name, **fields)
            return bool(found)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(ready), within)
        return found[0]

    async def disconnect(self) -> None:
        """Close the connection and its HTTP session (idempotent)."""
        await self.client.disconnect()
        if self._http is not None:
            await self._http.close()


async def connect(
    server: Reachable, token: str | None, *, transport: str = "websocket", **kwargs: Any
) -> EventLog:
    """A connected :class:`EventLog` over ``transport`` (see :meth:`EventLog.connect` for
    ``kwargs``)."""
    return await EventLog(transport).connect(server, token, **kwargs)


@contextlib.asynccontextmanager
async def following(server: Reachable, room_id: str, token: str = ALICE) -> AsyncIterator[EventLog]:
    """An :class:`EventLog` following ``room:{room_id}`` as a frontend, closed afterwards."""
    log = await connect(server, token)
    try:
        await log.join_room(room_id)
        yield log
    finally:
        await log.disconnect()


class Room:
    """A room with a barrier job, to flush a follower's event stream without sleeping.

    Socket.IO delivers a connection's events in order, so once the pending event of a
    barrier task submitted *after* some change has arrived, every event that change caused
    for that connection has arrived too.
    """

    BARRIER_JOB = "modifiers:Barrier"

    def __init__(self, api: httpx.AsyncClient, room_id: str | None = None) -> None:
        self.api = api
        self.id = room_id or new_room()

    @property
    def barrier_job(self) -> str:
        return f"{self.id}:{self.BARRIER_JOB}"

    async def setup(self) -> Room:
        """Register the barrier job (its worker is never used)."""
        response = await self.api.put(
            f"/rooms/{self.id}/jobs",
            json={"category": "modifiers", "name": "Barrier", "schema": {}},
        )
        assert response.status_code in (200, 201), response.text
        return self

    async def flush(self, *logs: EventLog) -> None:
        """Return once every log following this room got all events caused before now."""
        task = await submit(self.api, self.id, self.barrier_job)
        for log in logs:
            await log.wait_for("task_status_event", id=task["id"])
