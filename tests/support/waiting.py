"""Waiting on a condition instead of sleeping: every helper ends as soon as it holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.names import ADMIN, auth
from tests.support.server import ServerProcess

TERMINAL = {"completed", "failed", "cancelled"}


async def wait_until(
    condition: Callable[[], bool], within: float = 10.0, what: str = "condition"
) -> None:
    """Poll a cheap local condition until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


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


async def wait_status(
    api: httpx.AsyncClient, task_id: str, status: str, within: float
) -> dict[str, Any]:
    """The task once it has ``status``; fails after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            task: dict[str, Any] = (await api.get(f"/tasks/{task_id}")).json()
            if task["status"] == status:
                return task
            await asyncio.sleep(0.05)


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
        task: dict[str, Any] = response.json()
        if task["status"] in TERMINAL:
            return task
        if remaining <= 0:
            raise AssertionError(f"task {task_id} not terminal after {within} s: {task}")
