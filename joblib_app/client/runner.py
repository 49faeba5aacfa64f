"""Running one claimed task: its result, its progress reports, and its cancellation."""

from __future__ import annotations

import contextvars
import logging
from typing import TYPE_CHECKING, Any

import pydantic_core

from joblib_app.client.errors import ApiError, JoblibClientError
from joblib_app.client.models import ClaimedTask

if TYPE_CHECKING:
    from joblib_app.client.http import ApiClient
    from joblib_app.client.manager import Executor

logger = logging.getLogger(__name__)

_CURRENT: contextvars.ContextVar[ClaimedTask[Any] | None] = contextvars.ContextVar(
    "joblib_current_task", default=None
)


def current_task() -> ClaimedTask[Any] | None:
    """The task the calling thread is running for a :class:`JobManager`, if any.

    Lets an ``Extension.run`` report progress and check for cancellation without an
    extra argument: ``task = current_task(); task.report_progress(0.5)``;
    ``if task.cancelled.is_set(): return``. Threads the extension starts itself do not
    see it (pass the task along).
    """
    return _CURRENT.get()


def report_progress(
    api: ApiClient, task: ClaimedTask[Any], progress: float, message: str | None
) -> None:
    """``PATCH running`` with ``progress`` (0 to 1) and ``message``.

    The server answers with the task; if it was cancelled meanwhile, ``task.cancelled``
    is set (how a worker without Socket.IO learns of it).
    """
    body: dict[str, Any] = {"status": "running", "progress": float(progress)}
    if message is not None:
        body["progress_message"] = message
    # The same report twice is harmless, so a lost answer may be retried.
    response = api.request("PATCH", f"/tasks/{task.task_id}", json=body, retry_for=10.0)
    if response.json().get("status") == "cancelled" and not task.cancelled.is_set():
        logger.info("Task %s was cancelled (seen in a progress answer)", task.task_id)
        task.cancelled.set()


def jsonable_result(value: Any) -> Any:
    """``value`` as plain JSON data (pydantic models, dataclasses, ... converted)."""
    return pydantic_core.to_jsonable_python(value)


def run_task(
    execute: Executor,
    task: ClaimedTask[Any],
    *,
    complete: Any,
    fail: Any,
) -> None:
    """Run ``execute(task)`` and report the outcome with ``complete(task, result=...)`` or
    ``fail(task_id, error)``; neither raises here.

    A task cancelled while it ran is expected to end with a refused report (409): that
    is logged at INFO, not as an error.
    """
    token = _CURRENT.set(task)
    try:
        value = execute(task)
    except Exception as exc:
        if task.cancelled.is_set():
            logger.info(
                "Task %s (%s) stopped after its cancellation: %s", task.task_id, task.job_name, exc
            )
            return
        logger.exception("Task %s (%s) raised", task.task_id, task.job_name)
        fail(task.task_id, f"{type(exc).__name__}: {exc}")
        return
    finally:
        _CURRENT.reset(token)
    try:
        result = None if value is None else jsonable_result(value)
    except pydantic_core.PydanticSerializationError as exc:
        logger.error("Task %s returned a result that is not JSON: %s", task.task_id, exc)
        fail(task.task_id, f"result is not JSON-serialisable: {exc}")
        return
    try:
        complete(task, result=result)
    except ApiError as exc:
        if exc.status_code == 409 and task.cancelled.is_set():
            logger.info("Task %s was cancelled; its outcome was not recorded", task.task_id)
        elif exc.status_code == 409:
            logger.info("Task %s was finished elsewhere (%s)", task.task_id, exc.detail)
        elif exc.status_code == 413:
            logger.error("Task %s result refused: %s", task.task_id, exc.detail)
            fail(task.task_id, f"result too large: {exc.detail}")
        else:
            logger.warning("Could not mark task %s completed: %s", task.task_id, exc)
    except JoblibClientError as exc:
        logger.warning("Could not mark task %s completed: %s", task.task_id, exc)
