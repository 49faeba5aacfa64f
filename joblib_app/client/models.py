"""Plain records the worker SDK hands out or keeps: claimed tasks and registrations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from joblib_app.domain.names import GLOBAL_ROOM
from joblib_app.domain.names import make_full_name as full_name
from joblib_app.extension import Extension, Provider, category_of

__all__ = ["GLOBAL_ROOM", "ClaimedTask", "JobRegistration", "ProviderRegistration", "full_name"]

E = TypeVar("E", bound=Extension)


@dataclass(frozen=True, slots=True)
class ClaimedTask(Generic[E]):
    """A task this worker has claimed, with its parameters parsed into the extension.

    ``run_kwargs`` are the keyword arguments given to ``register(..., run_kwargs=...)`` for
    the task's job; pass them on to ``extension.run``.

    ``cancelled`` is set once the task is cancelled on the server (told over Socket.IO, or
    seen in the answer to a progress report): wait on it or poll it, and return early.
    Inside ``Extension.run``, :func:`joblib_app.client.current_task` gives this object.
    """

    task_id: str
    job_name: str
    room_id: str
    extension: E
    run_kwargs: dict[str, Any] = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False)
    # Sends a progress report (set by the manager that claimed the task).
    reporter: Callable[[ClaimedTask[Any], float, str | None], None] | None = field(
        default=None, repr=False, compare=False
    )

    def report_progress(self, progress: float, message: str | None = None) -> None:
        """Report how far the task is (0 to 1), with an optional message (<= 500 chars).

        Sets :attr:`cancelled` if the server answers that the task was cancelled.
        """
        if self.reporter is None:
            raise RuntimeError("this task was not claimed by a JobManager")
        self.reporter(self, progress, message)

    def run(self, vis: Any = None, **extra: Any) -> Any:
        """Run the extension with the registered ``run_kwargs`` (overridden by ``extra``)."""
        return self.extension.run(vis, **{**self.run_kwargs, **extra})


@dataclass(slots=True)
class JobRegistration:
    """A job this manager serves: what to re-register after losing the server."""

    cls: type[Extension]
    room_id: str
    run_kwargs: dict[str, Any]

    @property
    def category(self) -> str:
        """The job's category (from the extension class)."""
        return category_of(self.cls)

    @property
    def full_name(self) -> str:
        """``{room}:{category}:{ClassName}``."""
        return full_name(self.room_id, self.category, self.cls.__name__)


@dataclass(slots=True)
class ProviderRegistration:
    """A provider this manager serves; ``provider_id`` changes when it is re-registered."""

    cls: type[Provider]
    name: str
    handler: Any
    room_id: str
    provider_id: str

    @property
    def category(self) -> str:
        """The provider's category (from the provider class)."""
        return category_of(self.cls)

    @property
    def full_name(self) -> str:
        """``{room}:{category}:{name}``."""
        return full_name(self.room_id, self.category, self.name)
