"""Per-task ordering of task_status_event sends within one process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from joblib_app.realtime.ordering import TaskEventOrder

Emit = Callable[[], Awaitable[None]]


async def test_older_versions_are_dropped_and_sends_of_one_task_never_overlap() -> None:
    order = TaskEventOrder()
    sent: list[tuple[str, int]] = []
    gate = asyncio.Event()

    def emitter(task_id: str, version: int, *, hold: bool = False) -> Emit:
        async def emit() -> None:
            if hold:
                await gate.wait()
            sent.append((task_id, version))

        return emit

    # v2 is being sent (held); v1 of the same task arrives meanwhile and must not pass it.
    first = asyncio.ensure_future(order.send("a", 2, emitter("a", 2, hold=True)))
    await asyncio.sleep(0)
    late = asyncio.ensure_future(order.send("a", 1, emitter("a", 1)))
    other = asyncio.ensure_future(order.send("b", 1, emitter("b", 1)))
    await other
    assert sent == [("b", 1)]
    gate.set()
    await asyncio.gather(first, late)
    await order.send("a", 3, emitter("a", 3))
    assert sent == [("b", 1), ("a", 2), ("a", 3)]


async def test_memory_is_bounded() -> None:
    order = TaskEventOrder(remembered=2)
    sent: list[str] = []
    for task_id in ("a", "b", "c"):
        await order.send(task_id, 5, _append(sent, task_id))
    # "a" was forgotten: a late event of it goes out as it comes.
    await order.send("a", 1, _append(sent, "a-late"))
    await order.send("c", 4, _append(sent, "c-late"))
    assert sent == ["a", "b", "c", "a-late"]


def _append(sent: list[str], value: str) -> Emit:
    async def emit() -> None:
        sent.append(value)

    return emit
