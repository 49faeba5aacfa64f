"""The running state of one joblib sub-app, shared by its routers, handlers and sweeper."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from joblib_app.config import JoblibConfig
from joblib_app.realtime.events import Outbox
from joblib_app.settings import JobLibSettings
from joblib_app.store.database import Database

if TYPE_CHECKING:
    import socketio

    from joblib_app.internal.registry import InternalRegistry
    from joblib_app.providers.backend import ResultBackend
    from joblib_app.realtime.notifier import Notifier

logger = logging.getLogger(__name__)


@dataclass
class AppContext:
    """Everything a request needs besides its own arguments."""

    config: JoblibConfig
    settings: JobLibSettings
    db: Database
    notifier: Notifier
    sio: socketio.AsyncServer
    result_backend: ResultBackend
    internal: InternalRegistry | None = None
    # Ids of the internal tasks this process is running itself (``database_executor``).
    running_internal: set[str] = field(default_factory=set)
    extras: dict[str, Any] = field(default_factory=dict)
    # Called with every committed outbox, in this process, before it is sent (metrics,
    # dashboard wake-ups); each must be cheap and must not raise.
    dispatch_hooks: list[Callable[[Outbox], None]] = field(default_factory=list)

    async def dispatch(self, outbox: Outbox) -> None:
        """Send what a committed transaction collected: Socket.IO events, then wake-ups.

        The change is already committed, so a failure here is logged and not raised: the
        client's request succeeded, and waiters have their database re-check.
        """
        for hook in self.dispatch_hooks:
            hook(outbox)
        for name, payload, room in outbox.events:
            try:
                await self.sio.emit(name, payload, room=room)
            except Exception:
                logger.exception("Could not emit %s to %s", name, room)
        for channel, message in outbox.notifications:
            try:
                await self.notifier.publish(channel, message)
            except Exception:
                logger.exception("Could not publish a notification on %s", channel)
