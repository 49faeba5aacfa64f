"""Registering ``@internal`` extensions as taskiq tasks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskiq import AsyncBroker
from taskiq.decor import AsyncTaskiqDecoratedTask

from joblib_app.config import InternalExecutor
from joblib_app.domain.names import INTERNAL_ROOM, make_full_name
from joblib_app.extension import Extension, category_of

logger = logging.getLogger(__name__)


def internal_job_name(extension: type[Extension]) -> str:
    """``@internal:{category}:{ClassName}``: the job's full name and its taskiq task name."""
    return make_full_name(INTERNAL_ROOM, category_of(extension), extension.__name__)


@dataclass
class InternalRegistry:
    """The taskiq tasks of the internal extensions, by job full name."""

    broker: AsyncBroker
    extensions: dict[str, type[Extension]] = field(default_factory=dict)
    tasks: dict[str, AsyncTaskiqDecoratedTask[Any, Any]] = field(default_factory=dict)

    def __contains__(self, job_full_name: str) -> bool:
        return job_full_name in self.tasks


def _task_function(extension: type[Extension], executor: InternalExecutor) -> Any:
    async def run_internal_task(payload: dict[str, Any], room_id: str, task_id: str) -> None:
        await executor(extension, payload, room_id, task_id)

    run_internal_task.__name__ = f"run_{extension.__name__}"
    return run_internal_task


def register_internal_tasks(
    broker: AsyncBroker,
    extensions: Sequence[type[Extension]],
    executor: InternalExecutor,
) -> InternalRegistry:
    """Register each extension on ``broker`` as a task named by its full job name.

    Use this alone in a standalone ``taskiq worker`` process (no database, no app); the
    server calls it too, and also creates the job rows.
    """
    registry = InternalRegistry(broker=broker)
    for extension in extensions:
        name = internal_job_name(extension)
        if name in registry.tasks:
            raise ValueError(f"Internal extension {name} is registered twice")
        registry.extensions[name] = extension
        registry.tasks[name] = broker.register_task(
            _task_function(extension, executor), task_name=name
        )
        logger.debug("Registered internal task %s", name)
    return registry
