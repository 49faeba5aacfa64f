"""Ready executors for ``@internal`` tasks.

An executor is an async ``(extension_cls, payload, room_id, task_id)``. Both here do what
most hosts want: build the extension from the payload, mark the task running, call
``run()`` in a thread, then mark it completed with what ``run()`` returned as the task's
``result`` (as a worker's result: JSON data, at most ``max_task_result_bytes``), or failed
with the error text.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import pydantic_core

from joblib_app.config import InternalExecutor
from joblib_app.context import AppContext
from joblib_app.domain.errors import ContentTooLarge, InvalidTransition, TaskNotFound
from joblib_app.domain.statuses import TaskStatus
from joblib_app.extension import Extension
from joblib_app.services.task_status import check_result_size, set_task_status

logger = logging.getLogger(__name__)

StatusReporter = Callable[[str, TaskStatus, str | None, Any], Awaitable[None]]
"""``(task_id, status, error, result)``: records a status; ``result`` only with completed."""
# Answers to a status report meaning the task is gone (404) or already finished (409).
_NO_LONGER_OPEN = (404, 409)
_CONTENT_TOO_LARGE = 413
_NO_LONGER_OPEN_ERRORS = (TaskNotFound, InvalidTransition)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _problem_detail(response: httpx.Response) -> str:
    """A problem answer's ``detail``, or its text when it is no problem+json."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return detail if isinstance(detail, str) else response.text


class TaskNoLongerOpen(Exception):
    """The server refused a status report because the task is gone or already finished
    (the sweeper failed it, a user cancelled it, the server shut down)."""


class ResultRefused(Exception):
    """The server refused the task's result: larger than ``max_task_result_bytes``."""


async def run_and_report(
    extension_cls: type[Extension],
    payload: dict[str, Any],
    task_id: str,
    report: StatusReporter,
) -> None:
    """Running → ``run()`` → completed with its return value as the result, or failed.

    Failed carries the error text: ``run()`` raised, its return value is no JSON data, or
    the server refused it as larger than ``max_task_result_bytes``. A task the server no
    longer lets us move to running is not run at all; one finished
    elsewhere while ``run()`` ran keeps the outcome it has. Both are logged, not raised:
    nothing is wrong with this worker.
    """
    name = extension_cls.__name__
    try:
        await report(task_id, TaskStatus.RUNNING, None, None)
    except TaskNoLongerOpen as exc:
        logger.warning("Internal task %s (%s) not run: %s", task_id, name, exc)
        return
    outcome, error, result = TaskStatus.COMPLETED, None, None
    try:
        extension = extension_cls.model_validate(payload)
        value = await asyncio.to_thread(extension.run, None)
    except Exception as exc:
        logger.warning("Internal task %s (%s) failed: %s", task_id, name, exc)
        outcome, error = TaskStatus.FAILED, _error_text(exc)
    else:
        try:
            result = None if value is None else pydantic_core.to_jsonable_python(value)
        except pydantic_core.PydanticSerializationError as exc:
            logger.warning("Internal task %s (%s) returned no JSON: %s", task_id, name, exc)
            outcome, error = TaskStatus.FAILED, f"result is not JSON-serialisable: {exc}"
    try:
        try:
            await report(task_id, outcome, error, result)
        except ResultRefused as exc:
            logger.warning("Internal task %s (%s): result refused: %s", task_id, name, exc)
            await report(task_id, TaskStatus.FAILED, f"result too large: {exc}", None)
    except TaskNoLongerOpen as exc:
        logger.warning("Internal task %s (%s) ran; it was finished already: %s", task_id, name, exc)


def database_executor(ctx: AppContext) -> InternalExecutor:
    """An executor for tasks run inside the server process: it writes to the database."""

    async def report(task_id: str, status: TaskStatus, error: str | None, result: Any) -> None:
        reported = None
        if result is not None:
            try:
                check_result_size(result, ctx.settings.max_task_result_bytes)
            except ContentTooLarge as exc:
                raise ResultRefused(exc.detail) from exc
            reported = {"result": result}
        try:
            await set_task_status(ctx, task_id, status, error=error, reported=reported)
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

    async def report(task_id: str, status: TaskStatus, error: str | None, result: Any) -> None:
        body: dict[str, Any] = {"status": status.value}
        if error is not None:
            body["error"] = error
        if result is not None:
            body["result"] = result
        response = await client_of_this_loop().patch(f"{root}/tasks/{task_id}", json=body)
        if response.status_code in _NO_LONGER_OPEN:
            raise TaskNoLongerOpen(f"{response.status_code} {response.text}")
        if response.status_code == _CONTENT_TOO_LARGE:
            raise ResultRefused(_problem_detail(response))
        response.raise_for_status()

    async def execute(
        extension_cls: type[Extension], payload: dict[str, Any], room_id: str, task_id: str
    ) -> None:
        await run_and_report(extension_cls, payload, task_id, report)

    return execute
