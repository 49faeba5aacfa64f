"""What :meth:`JobManager.submit` returns: the task's id, with ways to wait for its end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from joblib_app.client.errors import JoblibClientError
from joblib_app.domain.statuses import TaskStatus

if TYPE_CHECKING:
    from joblib_app.client.submitting import TaskSubmitter


class TaskFailed(JoblibClientError):
    """The task ended ``failed``; ``task`` is its final JSON, ``error`` the worker's reason."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        self.error = str(task.get("error") or "")
        super().__init__(f"task {task.get('id')} failed: {self.error}")


class TaskCancelled(JoblibClientError):
    """The task ended ``cancelled``; ``task`` is its final JSON."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        super().__init__(f"task {task.get('id')} was cancelled")


class TaskHandle(str):
    """A submitted task. It is the task id (a ``str``), so code that kept the id still works.

    :meth:`wait` returns the final task; :meth:`result` returns what the worker's
    ``execute`` returned, or raises :class:`TaskFailed` / :class:`TaskCancelled`.
    Both use the server's long-poll and raise :class:`TimeoutError` after ``timeout`` s.
    """

    _manager: TaskSubmitter

    def __new__(cls, task_id: str, manager: TaskSubmitter) -> TaskHandle:
        handle = super().__new__(cls, task_id)
        handle._manager = manager
        return handle

    @property
    def id(self) -> str:
        """The task id as a plain ``str``."""
        return str.__str__(self)

    def status(self) -> dict[str, Any]:
        """The task as the server has it now."""
        return self._manager.get_task(self.id)

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the task is completed, failed or cancelled; return its JSON."""
        return self._manager.wait_for_task(self.id, timeout)

    def result(self, timeout: float | None = None) -> Any:
        """The task's result once completed; raises if it failed or was cancelled."""
        task = self.wait(timeout)
        if task["status"] == TaskStatus.FAILED:
            raise TaskFailed(task)
        if task["status"] == TaskStatus.CANCELLED:
            raise TaskCancelled(task)
        return task.get("result")

    def cancel(self) -> dict[str, Any]:
        """Cancel the task (as its submitter); returns the task."""
        return self._manager.cancel_by_id(self.id)
