"""The submitting side of the SDK: submit a task, follow it, cancel it."""

from __future__ import annotations

from typing import Any

from joblib_app.client.handles import TaskHandle
from joblib_app.client.http import ApiClient
from joblib_app.domain.names import GLOBAL_ROOM
from joblib_app.domain.names import make_full_name as full_name
from joblib_app.domain.statuses import TaskStatus
from joblib_app.extension import Extension, category_of


class TaskSubmitter:
    """Submitting and following tasks over :attr:`api`; a base of :class:`JobManager`.

    Needs no worker: a manager made only to submit (``use_socketio=False``, nothing
    registered) never creates one.
    """

    api: ApiClient

    def submit(self, extension: Extension, room: str, job_room: str = GLOBAL_ROOM) -> TaskHandle:
        """Submit a task running ``extension`` (its fields are the payload).

        Returns a :class:`TaskHandle`: the task id (a ``str``) with ``wait(timeout)`` and
        ``result(timeout)``. ``room`` is where the task lives; ``job_room`` is where the job
        is registered.
        """
        job = full_name(job_room, category_of(type(extension)), type(extension).__name__)
        task_id = self.api.submit(room, job, extension.model_dump(mode="json"))
        return TaskHandle(task_id, self)

    def cancel_by_id(self, task_id: str) -> dict[str, Any]:
        """Cancel the task ``task_id`` (as its submitter, or the claiming worker's owner)."""
        return self.api.update_task(task_id, {"status": TaskStatus.CANCELLED})

    def get_task(self, task_id: str, *, wait: float | None = None) -> dict[str, Any]:
        """The task as the server has it; with ``wait``, long-poll until it is terminal."""
        return self.api.get_task(task_id, wait=wait)

    def wait_for_task(
        self, task_id: str, timeout: float | None = None, *, poll_wait: float = 30.0
    ) -> dict[str, Any]:
        """Block until the task is completed, failed or cancelled, and return it.

        Uses the server's long-poll, so the answer comes as soon as the task finishes.
        Raises :class:`TimeoutError` after ``timeout`` seconds.
        """
        return self.api.wait_for_task(task_id, timeout, poll_wait=poll_wait)
