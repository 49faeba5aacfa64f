"""Clients of the real-time acceptance tests: HTTP, Socket.IO event logs, worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import socketio

from tests.support.server import ROOT, ServerProcess

WORKER_SCRIPT = Path(__file__).with_name("worker_proc.py")
EVENT_TIMEOUT = 5.0

Event = tuple[str, dict[str, Any]]


def new_room() -> str:
    """A room id of the calling test's own."""
    return f"rt{uuid.uuid4().hex[:12]}"


def http(server: ServerProcess, token: str | None) -> httpx.AsyncClient:
    """An HTTP client on the joblib mount, authenticated as ``token`` (if any)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=server.base, headers=headers, timeout=30)


def socketio_path(server: ServerProcess) -> str:
    """The Socket.IO path of the mounted sub-app, as python-socketio's client wants it."""
    return server.mount.strip("/") + "/socket.io"


class EventLog:
    """A Socket.IO client that records every event it receives, in order."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
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
        self, server: ServerProcess, token: str | None, *, in_header: bool = False
    ) -> EventLog:
        """Connect over websocket, with the token in the auth payload or in the headers."""
        kwargs: dict[str, Any] = {}
        if token is not None and in_header:
            kwargs["headers"] = {"Authorization": f"Bearer {token}"}
        elif token is not None:
            kwargs["auth"] = {"token": token}
        await self.client.connect(
            server.origin,
            socketio_path=socketio_path(server),
            transports=["websocket"],
            wait_timeout=10,
            **kwargs,
        )
        return self

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Emit a client event and return the server's acknowledgement."""
        return await self.client.call(event, data, timeout=EVENT_TIMEOUT)

    async def join_room(self, room_id: str) -> None:
        """Follow ``room:{room_id}`` as a frontend; the server must accept."""
        answer = await self.call("join_room", {"room_id": room_id})
        assert answer == {"status": "ok"}, answer

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
        """Close the connection (idempotent)."""
        await self.client.disconnect()


async def connect(server: ServerProcess, token: str | None, **kwargs: Any) -> EventLog:
    """A connected :class:`EventLog` (see :meth:`EventLog.connect` for ``kwargs``)."""
    return await EventLog().connect(server, token, **kwargs)


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


async def register_job(
    api: httpx.AsyncClient, room_id: str, name: str, worker_id: str | None = None
) -> dict[str, Any]:
    """Register ``modifiers:{name}`` in ``room_id`` (a new worker unless one is given)."""
    body: dict[str, Any] = {"category": "modifiers", "name": name, "schema": {"x": 1}}
    if worker_id is not None:
        body["worker_id"] = worker_id
    response = await api.put(f"/rooms/{room_id}/jobs", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def submit(api: httpx.AsyncClient, room_id: str, job_full_name: str) -> dict[str, Any]:
    """Submit a task with an empty payload; the 202 body."""
    response = await api.post(f"/rooms/{room_id}/tasks/{job_full_name}", json={"payload": {}})
    assert response.status_code == 202, response.text
    return response.json()


async def claim(api: httpx.AsyncClient, worker_id: str, **headers: str) -> dict[str, Any] | None:
    """Claim once for ``worker_id``; the task or None."""
    response = await api.post("/tasks/claim", json={"worker_id": worker_id}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["task"]


async def set_status(api: httpx.AsyncClient, task_id: str, status: str) -> dict[str, Any]:
    """PATCH the task's status; the updated task."""
    response = await api.patch(f"/tasks/{task_id}", json={"status": status})
    assert response.status_code == 200, response.text
    return response.json()


async def waiting(server: ServerProcess, channel: str, within: float = 5.0) -> None:
    """Return once a long-poll of ``server`` is listening on notifier ``channel``
    (``task:{id}`` or ``job:{full_name}``), so a change made next must wake it."""
    async with httpx.AsyncClient(base_url=server.origin, timeout=within) as client:
        async with asyncio.timeout(within):
            while True:
                answer = await client.get(f"/joblib-waiters/{channel}")
                if answer.json()["count"] > 0:
                    return
                await asyncio.sleep(0.005)


class WorkerProcess:
    """``worker_proc.py`` in a subprocess: a worker that registered a job and holds a
    running task, then waits to be killed. ``mode`` is ``http`` (no Socket.IO at all) or
    ``socketio`` (it also joined its job room, so the server remembers it on the socket).
    """

    def __init__(self, server: ServerProcess, room_id: str, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), server.base, room_id, mode],
            cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, str] = {}

    async def ready(self, within: float = 20.0) -> dict[str, str]:
        """Worker id, job and task id, once the task is running."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), within)
        assert line, f"worker process exited with {self.process.poll()}"
        self.info = json.loads(line)
        return self.info

    def kill(self) -> None:
        """SIGKILL: no goodbye, no DELETE /workers, no Socket.IO disconnect packet."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=5)

    def close(self) -> None:
        """Kill the process if it still runs and close its pipes."""
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
