"""The task runner: claiming, running, reporting, progress, cancellation, concurrency.

With ``execute=`` the :class:`TaskRunner` runs ``concurrency`` claim loops, each on a thread
of its own (``joblib-claimer-...``): claim (a long-poll), mark running, call ``execute``,
report the outcome. Without it the owner claims by hand (:meth:`TaskRunner.claim`,
:meth:`TaskRunner.listen`) and reports with :meth:`TaskRunner.transition`.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pydantic_core

from joblib_app.client.errors import (
    ApiError,
    Conflict,
    JoblibClientError,
    PayloadTooLarge,
    ServerUnreachable,
    WorkerGone,
)
from joblib_app.client.http import ApiClient
from joblib_app.client.models import ClaimedTask
from joblib_app.client.registry import Registry
from joblib_app.client.state import ManagerState, StopCause
from joblib_app.client.supervisor import ClaimBackoff, Supervisor
from joblib_app.client.threads import OwnedThreads
from joblib_app.domain.statuses import TaskStatus, is_terminal

logger = logging.getLogger(__name__)

Executor = Callable[[ClaimedTask[Any]], Any]
"""What ``JobManager(execute=...)`` calls with each claimed task; its return is the result."""

# While the registration is uncertain, a claim loop checks back this often.
_RECOVERY_POLL_SECONDS = 0.2

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


def jsonable_result(value: Any) -> Any:
    """``value`` as plain JSON data (pydantic models, dataclasses, ... converted)."""
    return pydantic_core.to_jsonable_python(value)


class TaskRunner:
    """Claims and runs the tasks of one worker; see the module docstring."""

    def __init__(
        self,
        api: ApiClient,
        state: ManagerState,
        registry: Registry,
        supervisor: Supervisor,
        *,
        execute: Executor | None,
        concurrency: int,
        claim_wait: float,
        polling_interval: float,
    ) -> None:
        self._api = api
        self._state = state
        self._registry = registry
        self._supervisor = supervisor
        self._execute = execute
        self._concurrency = concurrency
        self._claim_wait = claim_wait
        self._polling_interval = polling_interval
        self._backoff = ClaimBackoff()
        self._threads = OwnedThreads("claimer")
        self._loops_started = False
        # Claimed tasks not yet reported finished, by id: where a cancellation is delivered.
        self._open_tasks: dict[str, ClaimedTask[Any]] = {}

    # -- claim loops ---------------------------------------------------------------------

    def start_claim_loops(self) -> None:
        """With ``execute``, start the claim loops (once; not after the manager stopped)."""
        if self._execute is None or self._loops_started or self._state.stopping:
            return
        self._loops_started = True
        for _ in range(self._concurrency):
            self._threads.start(self._claim_loop)

    def runs_on_claim_loop(self) -> bool:
        """Whether the calling thread is one of the claim loops (e.g. inside ``execute``)."""
        return threading.current_thread() in self._threads.running()

    def join(self, timeout: float) -> None:
        """Join the claim loops (they end once the manager stops)."""
        self._threads.join_all(timeout)

    def _claim_loop(self) -> None:
        while not self._state.stopping:
            task = self.next_task(self._claim_wait)
            if task is not None:
                self._serve(task)

    def _serve(self, task: dict[str, Any]) -> None:
        """Run one claimed task through ``execute`` and report the outcome."""
        if not self._state.begin_task():
            logger.info("Task %s arrived as the worker was leaving: left to its queue", task["id"])
            return
        try:
            claimed = self.load(task)
            if claimed is None:
                return
            try:
                self.transition(claimed.task_id, TaskStatus.RUNNING)
            except JoblibClientError as exc:
                # Cancelled in the meantime, or the server lost us: not ours to run any more.
                logger.warning("Could not start task %s: %s", claimed.task_id, exc)
                return
            assert self._execute is not None
            self._run(self._execute, claimed)
        finally:
            self._open_tasks.pop(str(task["id"]), None)
            self._state.end_task()

    # -- claiming ------------------------------------------------------------------------

    def claim(self, wait: float) -> ClaimedTask[Any] | None:
        """One claim, by hand: the loaded task, or None."""
        answer = self._api.claim(self._registry.require_worker(), wait=wait)
        return None if answer.task is None else self.load(answer.task)

    def listen(
        self, stop_event: threading.Event | None, wait: float | None
    ) -> Iterator[ClaimedTask[Any]]:
        """Claimed tasks until ``stop_event`` is set or the manager stops.

        Raises :class:`ServerUnreachable` if the manager stopped because of an outage.
        """
        while not self._state.stopping and not (stop_event and stop_event.is_set()):
            task = self.next_task(self._claim_wait if wait is None else wait)
            if task is None:
                continue
            claimed = self.load(task)
            if claimed is not None:
                yield claimed
        if self._state.stop_cause is StopCause.UNREACHABLE:
            raise ServerUnreachable(self._state.stop_reason or "server unreachable")

    def next_task(self, wait: float) -> dict[str, Any] | None:
        """One claim attempt of the serving loops, absorbing passing faults.

        Returns None when there was nothing to claim or the attempt failed (after the
        appropriate pause). Stops the manager for good on the fatal conditions.
        """
        state = self._state
        if state.recovering:
            # The registration is unconfirmed (the supervisor is on it): a claim could only
            # 404 or race the re-registration.
            state.task_ready.wait(_RECOVERY_POLL_SECONDS)
            return None
        state.task_ready.clear()
        began = time.monotonic()
        try:
            answer = self._api.claim(self._registry.require_worker(), wait=wait)
        except ServerUnreachable as exc:
            self._supervisor.note_unreachable(exc)
            state.stop_requested.wait(self._backoff.failed())
            return None
        except WorkerGone as exc:
            if not state.recovering:
                self._supervisor.stop(StopCause.WORKER_GONE, f"worker registration gone ({exc})")
                return None
            logger.warning("Claim failed: %s", exc)
            state.stop_requested.wait(self._backoff.failed())
            return None
        except ApiError as exc:
            logger.warning("Claim failed: %s", exc)
            state.stop_requested.wait(self._backoff.failed())
            return None
        self._backoff.succeeded()
        answered_at_once = wait <= 0 or time.monotonic() - began < wait / 2
        if answer.task is None and not answer.waited and answered_at_once:
            # The server answered at once without a task: it does not long-poll claims (or
            # another worker won the race). Wait for a wake-up instead of spinning.
            state.task_ready.wait(self._polling_interval)
        return answer.task

    def load(self, task: dict[str, Any]) -> ClaimedTask[Any] | None:
        """Turn a claimed task into a :class:`ClaimedTask`, failing it if that is impossible."""
        task_id = str(task["id"])
        registration = self._registry.job(task["job_name"])
        try:
            if registration is None:
                raise LookupError(f"job {task['job_name']} is not served by this worker")
            extension = registration.cls.model_validate(task.get("payload") or {})
        except Exception as exc:
            logger.error("Cannot run task %s: %s", task_id, exc)
            self.fail_quietly(task_id, f"{type(exc).__name__}: {exc}")
            return None
        claimed: ClaimedTask[Any] = ClaimedTask(
            task_id=task_id,
            job_name=task["job_name"],
            room_id=task["room_id"],
            extension=extension,
            run_kwargs=dict(registration.run_kwargs),
            reporter=self.report_progress,
        )
        self._open_tasks[task_id] = claimed
        return claimed

    # -- reporting -----------------------------------------------------------------------

    def transition(
        self,
        task_id: str,
        status: TaskStatus,
        error: str | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """``PATCH /tasks/{id}`` to ``status`` (with ``error`` and the ``extra`` fields)."""
        body: dict[str, Any] = {"status": status, **(extra or {})}
        if error is not None:
            body["error"] = error
        if is_terminal(status):
            self._open_tasks.pop(task_id, None)
        self._api.update_task(task_id, body)

    def fail_quietly(self, task_id: str, error: str) -> None:
        """Fail a task; a failure to report that is logged, not raised."""
        try:
            self.transition(task_id, TaskStatus.FAILED, error)
        except JoblibClientError as exc:
            logger.warning("Could not mark task %s failed: %s", task_id, exc)

    def report_progress(self, task: ClaimedTask[Any], progress: float, message: str | None) -> None:
        """``PATCH running`` with ``progress`` (0 to 1) and ``message``.

        The server answers with the task; if it was cancelled meanwhile, ``task.cancelled``
        is set (how a worker without Socket.IO learns of it).
        """
        body: dict[str, Any] = {"status": TaskStatus.RUNNING, "progress": float(progress)}
        if message is not None:
            body["progress_message"] = message
        answer = self._api.update_task(task.task_id, body)
        if answer.get("status") == TaskStatus.CANCELLED and not task.cancelled.is_set():
            logger.info("Task %s was cancelled (seen in a progress answer)", task.task_id)
            task.cancelled.set()

    def deliver_cancel(self, data: dict[str, Any]) -> None:
        """A ``task_cancel_requested`` event: set the task's ``cancelled`` if it is ours."""
        task = self._open_tasks.get(str(data.get("task_id")))
        if task is not None:
            logger.info("Task %s cancelled on the server", task.task_id)
            task.cancelled.set()

    # -- running -------------------------------------------------------------------------

    def _run(self, execute: Executor, task: ClaimedTask[Any]) -> None:
        """Run ``execute(task)`` and report the outcome; nothing raises here.

        A task cancelled while it ran is expected to end with a refused report (409): that
        is logged at INFO, not as an error.
        """
        token = _CURRENT.set(task)
        try:
            value = execute(task)
        except Exception as exc:
            if task.cancelled.is_set():
                logger.info(
                    "Task %s (%s) stopped after its cancellation: %s",
                    task.task_id,
                    task.job_name,
                    exc,
                )
                return
            logger.exception("Task %s (%s) raised", task.task_id, task.job_name)
            self.fail_quietly(task.task_id, f"{type(exc).__name__}: {exc}")
            return
        finally:
            _CURRENT.reset(token)
        try:
            result = None if value is None else jsonable_result(value)
        except pydantic_core.PydanticSerializationError as exc:
            logger.error("Task %s returned a result that is not JSON: %s", task.task_id, exc)
            self.fail_quietly(task.task_id, f"result is not JSON-serialisable: {exc}")
            return
        try:
            extra = None if result is None else {"result": result}
            self.transition(task.task_id, TaskStatus.COMPLETED, extra=extra)
        except Conflict as exc:
            if task.cancelled.is_set():
                logger.info("Task %s was cancelled; its outcome was not recorded", task.task_id)
            else:
                logger.info("Task %s was finished elsewhere (%s)", task.task_id, exc.detail)
        except PayloadTooLarge as exc:
            logger.error("Task %s result refused: %s", task.task_id, exc.detail)
            self.fail_quietly(task.task_id, f"result too large: {exc.detail}")
        except JoblibClientError as exc:
            logger.warning("Could not mark task %s completed: %s", task.task_id, exc)
