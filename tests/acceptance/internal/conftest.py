"""Servers, taskiq worker processes and Socket.IO observers for the ``@internal`` tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from tests.support.server import ServerProcess
from tests.support.services import delete_redis_prefix, require_redis

ADMIN = "admin"
ALICE = "user:alice"
TERMINAL = {"completed", "failed", "cancelled"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_room() -> str:
    return f"r{uuid.uuid4().hex[:10]}"


def sqlite_env(workdir: Path) -> dict[str, str]:
    return {"JOBLIB_TEST_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'joblib.db'}"}


def start_server(env: Mapping[str, str], workdir: Path, name: str = "server") -> ServerProcess:
    """A started server with the internal test extensions registered."""
    return ServerProcess(
        {"JOBLIB_TEST_INTERNAL": "1", **env}, log_path=workdir / f"{name}.log"
    ).start()


@pytest.fixture(scope="module")
def module_redis_prefix() -> Iterator[tuple[str, str]]:
    """``(redis_url, prefix)`` shared by a module's server; its keys are deleted afterwards."""
    url = require_redis()
    prefix = f"joblibtest:{uuid.uuid4().hex[:12]}:"
    yield url, prefix
    delete_redis_prefix(url, prefix)


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the ``server`` fixture of the requesting module (each defines its own)."""
    async with httpx.AsyncClient(base_url=server.base, timeout=20) as client:
        yield client


class RoomEvents:
    """A Socket.IO client following ``room:{room_id}``, recording ``task_status_event``."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient()
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.sio.on("task_status_event", self._on_status)

    async def _on_status(self, data: dict[str, Any]) -> None:
        async with self._changed:
            self.events.append(data)
            self._changed.notify_all()

    async def connect(self, server: ServerProcess, token: str, room_id: str) -> RoomEvents:
        await self.sio.connect(
            server.origin,
            socketio_path=f"{server.mount}/socket.io",
            auth={"token": token},
            transports=["websocket"],
            wait_timeout=10,
        )
        ack = await self.sio.call("join_room", {"room_id": room_id}, timeout=10)
        assert ack == {"status": "ok"}, ack
        return self

    def statuses(self, task_id: str) -> list[str]:
        return [e["status"] for e in self.events if e["id"] == task_id]

    async def wait_for_status(self, task_id: str, status: str, within: float = 20) -> None:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: status in self.statuses(task_id)), within
            )

    async def close(self) -> None:
        await self.sio.disconnect()


OpenRoomEvents = Callable[..., Awaitable[RoomEvents]]


@pytest.fixture
async def room_events() -> AsyncIterator[OpenRoomEvents]:
    """Open ``RoomEvents`` observers; all are disconnected afterwards."""
    opened: list[RoomEvents] = []

    async def open_observer(server: ServerProcess, room_id: str, token: str = ALICE) -> RoomEvents:
        observer = await RoomEvents().connect(server, token, room_id)
        opened.append(observer)
        return observer

    yield open_observer
    for observer in opened:
        await observer.close()


async def submit(
    http: httpx.AsyncClient, room_id: str, job: str, payload: dict[str, Any], token: str = ALICE
) -> httpx.Response:
    return await http.post(
        f"/rooms/{room_id}/tasks/{job}", json={"payload": payload}, headers=auth(token)
    )


async def wait_terminal(
    http: httpx.AsyncClient, task_id: str, within: float = 30
) -> dict[str, Any]:
    """The task once it is terminal, waiting with the server's long-poll."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        remaining = deadline - loop.time()
        response = await http.get(
            f"/tasks/{task_id}",
            headers={**auth(ADMIN), "Prefer": f"wait={max(1, min(10, int(remaining)))}"},
            timeout=15,
        )
        response.raise_for_status()
        task = response.json()
        if task["status"] in TERMINAL:
            return task
        if remaining <= 0:
            raise AssertionError(f"task {task_id} not terminal after {within} s: {task}")
