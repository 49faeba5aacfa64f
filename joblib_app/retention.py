"""Retention: the sweeper deletes terminal tasks older than ``task_retention_seconds``.

Pending and in-flight tasks are never deleted: only rows whose status is terminal and
whose ``completed_at`` is older than the cutoff (on the partial index of finished tasks).
Each batch is its own short write of at most ``task_retention_batch_size`` rows, and the
loop rests between batches as long as the last one took, so requests keep being served
while a large backlog is deleted (on SQLite the statements run on the event loop itself).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from sqlalchemy import bindparam, delete, select

from joblib_app.context import AppContext
from joblib_app.domain.statuses import TERMINAL_STATUSES
from joblib_app.models import UTCDateTime, task_table
from joblib_app.store.tasks import status_is

_T = task_table.c
IS_TERMINAL = status_is(_T.status, *sorted(s.value for s in TERMINAL_STATUSES))
# Built once; ``SKIP LOCKED`` lets sweepers of several processes take different batches
# (SQLite renders no FOR UPDATE: its writers are one at a time anyway).
_OLDEST_FINISHED = (
    select(_T.seq)
    .where(IS_TERMINAL, _T.completed_at < bindparam("cutoff", type_=UTCDateTime))
    .order_by(_T.completed_at)
    .limit(bindparam("batch"))
    .with_for_update(skip_locked=True)
)
_DELETE_BATCH = delete(task_table).where(_T.seq.in_(_OLDEST_FINISHED.scalar_subquery()))


async def delete_finished_tasks(
    ctx: AppContext,
    cutoff: datetime,
    *,
    batch_size: int,
    stop: asyncio.Event | None = None,
) -> int:
    """Delete terminal tasks finished before ``cutoff``, a batch at a time; return how many.

    Returns early once ``stop`` is set (shutdown), between two batches; the next sweep
    carries on.
    """
    deleted = 0
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    while True:
        began = loop.time()
        async with ctx.db.write() as conn:
            result = await conn.execute(_DELETE_BATCH, {"cutoff": cutoff, "batch": batch_size})
        deleted += result.rowcount
        if result.rowcount < batch_size:
            return deleted
        # Rest as long as the batch took: the sweep takes at most about half of the event
        # loop (SQLite) or of the database's time, and requests get the rest.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), loop.time() - began)
        if stop.is_set():
            return deleted
