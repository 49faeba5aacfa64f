"""Fault injection for the fault tests: a loopback proxy that loses answers, task counts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.support.realtime import new_room, register_job
from tests.support.server import ServerProcess

__all__ = ["DropAnswersProxy", "new_room", "register_job", "task_counts", "wait_status"]


class DropAnswersProxy:
    """A TCP proxy on loopback that forwards requests and loses every answer.

    The server sees its answer written; the client sees its connection closed instead, as
    when a connection drops or a client times out at the worst moment.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self.port = 0
        self.answers_dropped = 0

    async def __aenter__(self) -> DropAnswersProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def base(self, server: ServerProcess) -> str:
        return f"http://127.0.0.1:{self.port}{server.mount}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)

        async def forward() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        forwarding = asyncio.create_task(forward())
        try:
            # The first byte of the answer arrives: drop it and hang up on the client.
            if await up_reader.read(1):
                self.answers_dropped += 1
        finally:
            forwarding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forwarding
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()


async def wait_status(
    api: httpx.AsyncClient, task_id: str, status: str, within: float
) -> dict[str, Any]:
    """The task once it has ``status``; fails after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            task = (await api.get(f"/tasks/{task_id}")).json()
            if task["status"] == status:
                return task
            await asyncio.sleep(0.05)


async def task_counts(
    api: httpx.AsyncClient, room_id: str, expected: dict[str, int]
) -> dict[str, int]:
    """Stuck, wrongly failed, lost and duplicated tasks of a room, against ``expected``
    (task id to how many times it was run)."""
    listed = (await api.get(f"/rooms/{room_id}/tasks?limit=500")).json()["items"]
    by_id = {task["id"]: task for task in listed}
    return {
        "stuck": sum(t["status"] in ("pending", "claimed", "running") for t in listed),
        "failed": sum(t["status"] == "failed" for t in listed),
        "lost": sum(task_id not in by_id for task_id in expected),
        "duplicated": sum(runs > 1 for runs in expected.values()),
    }


@contextlib.asynccontextmanager
async def client(base: str, token: str, seconds: float = 30) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on ``base`` authenticated with ``token``."""
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=seconds
    ) as http:
        yield http
