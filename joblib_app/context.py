"""The running state of one joblib sub-app, shared by its routers, handlers and sweeper."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from socketio.async_pubsub_manager import AsyncPubSubManager

from joblib_app.config import JoblibConfig
from joblib_app.realtime.events import Outbox, OutboxEvent
from joblib_app.realtime.ordering import TaskEventOrder
from joblib_app.settings import JobLibSettings
from joblib_app.store.database import Database

if TYPE_CHECKING:
    from joblib_app.internal.registry import InternalRegistry
    from joblib_app.providers.backend import ResultBackend
    from joblib_app.realtime.notifier import Notifier
    from joblib_app.realtime.redis_guard import BackgroundSender
    from joblib_app.realtime.socketio_server import JoblibSocketServer
    from joblib_app.reconnects import ReconnectGrace

logger = logging.getLogger(__name__)

# The Socket.IO namespace every event is emitted in (python-socketio's default).
_NAMESPACE = "/"


def _reconnect_grace() -> ReconnectGrace:
    # Imported here: the cleanup it runs imports this module.
    from joblib_app.reconnects import ReconnectGrace

    return ReconnectGrace()


@dataclass
class AppContext:
    """Everything a request needs besides its own arguments."""

    config: JoblibConfig
    settings: JobLibSettings
    db: Database
    notifier: Notifier
    sio: JoblibSocketServer
    result_backend: ResultBackend
    internal: InternalRegistry | None = None
    # Ids of the internal tasks this process is running itself (``database_executor``).
    running_internal: set[str] = field(default_factory=set)
    extras: dict[str, Any] = field(default_factory=dict)
    task_event_order: TaskEventOrder = field(default_factory=TaskEventOrder)
    # With Redis: sends events and notifications off the request (see realtime.redis_guard).
    sender: BackgroundSender | None = None
    reconnects: ReconnectGrace = field(default_factory=_reconnect_grace)
    # Called with every committed outbox, in this process, before it is sent (metrics,
    # dashboard wake-ups); each must be cheap and must not raise.
    dispatch_hooks: list[Callable[[Outbox], None]] = field(default_factory=list)

    async def _in_version_order(
        self, event: OutboxEvent, emit: Callable[[], Awaitable[Any]]
    ) -> None:
        """``emit``, unless it is a task's status event older than one already sent."""
        if event.order_key is not None:
            task_id, version = event.order_key
            await self.task_event_order.send(task_id, version, emit)
        else:
            await emit()

    def _reaches_nobody(self, room: str) -> bool:
        """Whether an event for ``room`` has no recipient: no connection of this process
        is in it, and no other process can have one (no Redis manager)."""
        manager = self.sio.manager
        if isinstance(manager, AsyncPubSubManager):
            # Other processes' connections may be in the room.
            return False
        rooms: dict[str, Any] = manager.rooms.get(_NAMESPACE, {})
        return not rooms.get(room)

    async def dispatch(self, outbox: Outbox) -> None:
        """Send what a committed transaction collected: Socket.IO events, then wake-ups.

        The change is already committed, so a failure here is logged and not raised: the
        client's request succeeded, and waiters have their database re-check. With Redis,
        both are queued for the background sender: a hung Redis never delays the request.
        An event for a room nobody is in is not built at all.
        """
        for hook in self.dispatch_hooks:
            hook(outbox)
        sender = self.sender
        if sender is not None:
            publish = getattr(self.notifier, "publish_or_raise", self.notifier.publish)
            for event in outbox.events:
                emit = partial(self.sio.emit, event.name, event.payload, room=event.room)
                # The sender sends in the order it is given: order the submissions too.
                await self._in_version_order(event, partial(_submit, sender, emit))
            for channel, message in outbox.notifications:
                sender.submit(partial(publish, channel, message))
            return
        for event in outbox.events:
            if self._reaches_nobody(event.room):
                continue
            try:
                await self._in_version_order(
                    event, partial(self.sio.emit, event.name, event.payload, room=event.room)
                )
            except Exception:
                logger.exception("Could not emit %s to %s", event.name, event.room)
        for channel, message in outbox.notifications:
            try:
                await self.notifier.publish(channel, message)
            except Exception:
                logger.exception("Could not publish a notification on %s", channel)


async def _submit(sender: BackgroundSender, send: Callable[[], Awaitable[Any]]) -> None:
    sender.submit(send)
