"""Workers outlive a dropped Socket.IO connection for ``worker_reconnect_grace_seconds``.

A connection drops for many reasons that are not a dead worker: a network blip, a proxy
restart, this server process shutting down. So a dropped connection's workers are cleaned
up only once the grace period has passed, and only those that gave no sign of life since
the drop: a worker that re-attached (re-joined a room with its id, on any server process)
or heartbeat has a newer ``last_heartbeat`` and is spared. A server that shuts down cancels
the cleanups it has pending: its connections' workers will reconnect elsewhere, and the
sweeper stays the judge of workers that never come back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from joblib_app.context import AppContext
from joblib_app.models import utcnow
from joblib_app.services.workers import cleanup_workers

logger = logging.getLogger(__name__)

REASON = "Socket.IO connection closed"


class ReconnectGrace:
    """The cleanups of dropped connections, each waiting for its grace period to pass."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[None]] = set()

    def connection_dropped(self, ctx: AppContext, worker_ids: Collection[str]) -> None:
        """Schedule the cleanup of ``worker_ids`` (those still silent when the grace ends)."""
        grace = ctx.settings.worker_reconnect_grace_seconds
        task = asyncio.get_running_loop().create_task(
            self._clean_later(ctx, list(worker_ids), grace), name="joblib-reconnect-grace"
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _clean_later(self, ctx: AppContext, worker_ids: list[str], grace: float) -> None:
        dropped_at = utcnow()
        await asyncio.sleep(grace)
        try:
            removed = await cleanup_workers(ctx, worker_ids, reason=REASON, stale_before=dropped_at)
        except Exception:
            # The sweeper removes them later if they stay silent.
            logger.exception("Cleanup of the workers of a dropped connection failed")
            return
        spared = len(worker_ids) - len(removed)
        if spared:
            logger.info(
                "%d worker(s) re-attached within %g s of a dropped connection", spared, grace
            )

    async def close(self) -> None:
        """Shutting down: cancel every pending cleanup (see the module docstring)."""
        pending = list(self._pending)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            logger.info("Left %d dropped connection(s) to reconnect elsewhere", len(pending))
