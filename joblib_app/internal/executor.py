"""Ready executors for ``@internal`` tasks.

An executor is an async ``(extension_cls, payload, room_id, task_id)``. Both here do what
most hosts want: build the extension from the payload, mark the task running, call
``run()`` in a thread, then mark it completed, or failed with the error text.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from joblib_app.config import InternalExecutor
from joblib_app.context import AppContext
from joblib_app.domain.errors import InvalidTransition, TaskNotFound
from joblib_app.domain.statuses import TaskStatus
from joblib_app.extension import Extension
from joblib_app.services.task_status import set_task_status

logger = logging.getLogger(__name__)

StatusReporter = Callable[[str, TaskStatus, str | None], Awaitable[None]]
# Answers to a status report meaning the task is gone (404) or already finished (409).
_NO_LONGER_OPEN = (404, 409)
_NO_LONGER_OPEN_ERRORS = (TaskNotFound, InvalidTransition)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class TaskNoLongerOpen(Exception):
    """The server refused a status report because the task is gone or already finished
    (the sweeper failed it, a user cancelled it, the server shut down)."""


async def run_and_report(
    extension_cls: type[Extension],
    payload: dict[str, Any],
    task_id: str,
    report: StatusReporter,
) -> None:
    """Running → ``run()`` → completed, or failed with the error text.

    A task the server no longer lets us move to running is not run at all; one finished
    elsewhere while ``run()`` ran keeps the outcome it has. Both are logged, not raised:
    nothing is wrong with this worker.
    """
    name = extension_cls.__name__
    try:
        await report(task_id, TaskStatus.RUNNING, None)
    except TaskNoLongerOpen as exc:
        logger.warning("Internal task %s (%s) not run: %s", task_id, name, exc)
        return
    outcome, error = TaskStatus.COMPLETED, None
    try:
        extension = extension_cls.model_validate(payload)
        await asyncio.to_thread(extension.run, None)
    except Exception as exc:
        logger.warning("Internal task %s (%s) failed: %s", task_id, name, exc)
        outcome, error = TaskStatus.FAILED, _error_text(exc)
    try:
        await report(task_id, outcome, error)
    except TaskNoLongerOpen as exc:
        logger.warning("Internal task %s (%s) ran; it was finished already: %s", task_id, name, exc)


def database_executor(ctx: AppContext) -> InternalExecutor:
    """An executor for tasks run inside the server process: it writes to the database."""

    async def report(task_id: str, status: TaskStatus, error: str | None) -> None:
        try:
            await set_task_status(ctx, task_id, status, error=error)
        except _NO_LONGER_OPEN_ERRORS as exc:
            raise TaskNoLongerOpen(exc.detail) from exc

    async def execute(
        extension_cls: type[Extension], payload: dict[str, Any], room_id: str, task_id: str
    ) -> None:
        # Known to the app's shutdown, which fails what is still running past its grace.
        ctx.running_internal.add(task_id)
        try:
            await run_and_report(extension_cls, payload, task_id, report)
        finally:
            ctx.running_internal.discard(task_id)

    return execute


def rest_executor(
    base_url: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> InternalExecutor:
    """An executor for standalone ``taskiq worker`` processes: it reports over REST.

    ``base_url`` is where the sub-app is mounted (``http://host/v1/joblib``); the
    credential must be a superuser's, since no worker owns internal tasks.
    """
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    root = base_url.rstrip("/")
    # One client per event loop, reused by every task: building a client (TLS context)
    # and opening a connection per task cost more than the two PATCHes themselves.
    clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
        weakref.WeakKeyDictionary()
    )

    def client_of_this_loop() -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(headers=all_headers, timeout=timeout)
            clients[loop] = client
        return client

    async def report(task_id: str, status: TaskStatus, error: str | None) -> None:
        body: dict[str, Any] = {"status": status.value}
        if error is not None:
            body["error"] = error
        response = await client_of_this_loop().patch(f"{root}/tasks/{task_id}", json=body)
        if response.status_code in _NO_LONGER_OPEN:
            raise TaskNoLongerOpen(f"{response.status_code} {response.text}")
        response.raise_for_status()

    async def execute(
        extension_cls: type[Extension], payload: dict[str, Any], room_id: str, task_id: str
    ) -> None:
        await run_and_report(extension_cls, payload, task_id, report)

    return execute
