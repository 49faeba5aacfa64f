"""Emit each task's ``task_status_event`` in version order within one process.

Two requests changing one task commit in version order, but their events are sent after
the commit, by whichever request gets there first: a claim's event could overtake the
submit's. Per task, an event older than one already sent is dropped (a client following
the room would drop it anyway, per the contract), and sends of one task never overlap.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

# Tasks whose last sent version is remembered; older ones are forgotten first. An event
# that late (this many other tasks changed in between) is sent as it comes.
_REMEMBERED = 20_000


class TaskEventOrder:
    """The last version sent per task, and one lock per task with a send in progress."""

    def __init__(self, remembered: int = _REMEMBERED) -> None:
        self._sent: OrderedDict[str, int] = OrderedDict()
        # Per task with sends in progress: its lock and how many sends hold or await it.
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._remembered = remembered

    async def send(self, task_id: str, version: int, emit: Callable[[], Awaitable[None]]) -> None:
        """Run ``emit`` unless a newer event of ``task_id`` went out already."""
        entry = self._locks.get(task_id)
        if entry is None:
            entry = self._locks[task_id] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                last = self._sent.get(task_id)
                if last is not None and version <= last:
                    logger.debug(
                        "Dropped task_status_event of %s v%d (v%d sent)", task_id, version, last
                    )
                    return
                self._sent[task_id] = version
                self._sent.move_to_end(task_id)
                if len(self._sent) > self._remembered:
                    self._sent.popitem(last=False)
                await emit()
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[task_id]
