"""The manager's state in one object, with the decisions taken on it.

Every part of the SDK (supervisor, task runner, Socket.IO callbacks, the facade) reads and
changes the state through the methods here, under one lock. The three Events on the object
only *wake* sleepers (claim loops, the supervisor, retry loops); the state itself is the
plain fields, so a decision is always taken on a consistent view.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass


class Phase(enum.Enum):
    """Where the manager is in its life."""

    SERVING = "serving"
    STOPPING = "stopping"
    """Asked to stop: no new claims; the tasks in flight are finishing."""
    CLOSING = "closing"
    """Past waiting for the tasks in flight: a task claimed now is left to the server."""


class StopCause(enum.Enum):
    """Why the manager stopped."""

    REQUESTED = "requested"
    """``disconnect()``, a signal, or the context manager's exit."""
    WORKER_GONE = "worker-gone"
    """The server deleted this worker on purpose (a request to leave)."""
    UNREACHABLE = "unreachable"
    """The server did not answer for ``max_unreachable_seconds``."""
    REFUSED = "refused"
    """The server refused to take this worker back after an outage."""


class GoneVerdict(enum.Enum):
    """What a :class:`~joblib_app.client.errors.WorkerGone` answer means right now."""

    AWAIT_RECONNECT = "await-reconnect"
    """The Socket.IO connection is down: the server dropped the worker with it, and the
    reconnection re-registers."""
    RESYNC = "resync"
    """Swept or cleaned up while out of reach: re-register, this is no request to leave."""
    STOP = "stop"
    """Deleted while in contact: the owner wants this worker gone."""


@dataclass(slots=True)
class Contact:
    """What this worker knows of its registration on the server. Pure data, no locking.

    ``socket_down``: the Socket.IO connection dropped, and the worker has not been
    re-attached since (the server may have deleted it with the connection).
    ``unconfirmed``: a contact failed (a request unanswered, or the connection dropped) and
    the server has not confirmed this worker since.
    ``resync_due``: the supervisor must re-register this worker.
    """

    socket_down: bool = False
    unconfirmed: bool = False
    resync_due: bool = False

    @property
    def recovering(self) -> bool:
        """Whether the registration is uncertain: claims wait until it is confirmed."""
        return self.socket_down or self.unconfirmed or self.resync_due

    def gone_verdict(self) -> GoneVerdict:
        """Tell a worker deleted on purpose from one removed while it was out of reach."""
        if self.socket_down:
            return GoneVerdict.AWAIT_RECONNECT
        if self.unconfirmed or self.resync_due:
            return GoneVerdict.RESYNC
        return GoneVerdict.STOP


class ManagerState:
    """The state of one :class:`~joblib_app.client.JobManager`, shared by its parts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Notified when a task ends, for ``wait_idle``.
        self._idle = threading.Condition(self._lock)
        self._phase = Phase.SERVING
        self._cause: StopCause | None = None
        self._reason: str | None = None
        self._contact = Contact()
        # Counts Socket.IO drops: a re-registration confirms the contact only if no drop
        # came while it ran (the rooms it re-joined are then gone again).
        self._drops = 0
        self._busy = 0
        # Wake-ups only. ``stop_requested`` is set once the phase leaves SERVING, so that
        # retry loops and sleeps (``Event.wait``) end at once.
        self.stop_requested = threading.Event()
        self.task_ready = threading.Event()
        self.supervisor_wake = threading.Event()

    # -- phase and stopping --------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """The current :class:`Phase`."""
        return self._phase

    @property
    def stopping(self) -> bool:
        """Whether the manager has left :attr:`Phase.SERVING`."""
        return self._phase is not Phase.SERVING

    @property
    def stop_cause(self) -> StopCause | None:
        """Why the manager stopped, once it has."""
        return self._cause

    @property
    def stop_reason(self) -> str | None:
        """Why the manager stopped on its own, in words (None when asked to stop)."""
        return self._reason

    def request_stop(self) -> None:
        """Stop on the owner's request (disconnect, a signal)."""
        with self._lock:
            if self._phase is Phase.SERVING:
                self._phase = Phase.STOPPING
                self._cause = StopCause.REQUESTED
        self._wake_all()

    def stop_on_own(self, cause: StopCause, reason: str) -> bool:
        """Stop for ``cause``; False if already stopping (e.g. our own DELETE's 404)."""
        with self._lock:
            if self._phase is not Phase.SERVING:
                return False
            self._phase = Phase.STOPPING
            self._cause = cause
            self._reason = reason
        self._wake_all()
        return True

    def _wake_all(self) -> None:
        self.stop_requested.set()
        self.task_ready.set()
        self.supervisor_wake.set()

    # -- tasks in flight -----------------------------------------------------------------

    def begin_task(self) -> bool:
        """Count a claimed task as in flight; False once :attr:`Phase.CLOSING`.

        A task claimed while the stop was in flight is still run: ``disconnect`` waits for
        the tasks in flight before deleting the worker. Only once it stopped waiting, the
        worker's deletion puts a newly claimed task back in its queue (it never started).
        """
        with self._lock:
            if self._phase is Phase.CLOSING:
                return False
            self._busy += 1
            return True

    def end_task(self) -> None:
        """A task counted by :meth:`begin_task` is over."""
        with self._lock:
            self._busy -= 1
            self._idle.notify_all()

    def close_after_tasks(self, timeout: float | None, *, wait: bool = True) -> None:
        """Wait (up to ``timeout``) for the tasks in flight, then enter CLOSING."""
        with self._lock:
            if wait:
                self._idle.wait_for(lambda: not self._busy, timeout=timeout)
            self._phase = Phase.CLOSING
            if self._cause is None:
                self._cause = StopCause.REQUESTED

    # -- contact with the server ---------------------------------------------------------

    @property
    def recovering(self) -> bool:
        """Whether contact was lost and this worker's registration is not yet confirmed."""
        with self._lock:
            return self._contact.recovering

    def contact(self) -> Contact:
        """A copy of the contact state (for decisions and tests)."""
        with self._lock:
            return Contact(
                self._contact.socket_down, self._contact.unconfirmed, self._contact.resync_due
            )

    def socket_dropped(self) -> None:
        """The Socket.IO connection is lost: the first sign of an outage."""
        with self._lock:
            self._contact.socket_down = True
            self._contact.unconfirmed = True
            self._drops += 1
        self.supervisor_wake.set()

    def socket_reconnected(self, *, has_worker: bool) -> None:
        """The connection is back: the server forgot its rooms and maybe the worker."""
        with self._lock:
            if has_worker:
                self._contact.resync_due = True
            else:
                self._contact.socket_down = False
        self.supervisor_wake.set()

    def contact_failed(self) -> None:
        """A request went unanswered."""
        with self._lock:
            self._contact.unconfirmed = True

    def heartbeat_answered(self) -> bool:
        """The server confirmed this worker; True if that ends a lost contact."""
        with self._lock:
            was_lost = self._contact.unconfirmed
            self._contact.unconfirmed = False
        if was_lost:
            self.task_ready.set()
        return was_lost

    def worker_gone(self) -> GoneVerdict:
        """The server answered that it does not have this worker: decide what that means."""
        with self._lock:
            verdict = self._contact.gone_verdict()
            if verdict is GoneVerdict.RESYNC:
                self._contact.resync_due = True
        return verdict

    def take_resync(self) -> bool:
        """Whether a re-registration is due; the caller then does it."""
        with self._lock:
            due = self._contact.resync_due
            self._contact.resync_due = False
            return due

    def resync_failed(self) -> None:
        """A re-registration did not go through: try again."""
        with self._lock:
            self._contact.resync_due = True

    def drops(self) -> int:
        """How many times the Socket.IO connection dropped so far (see
        :meth:`registration_confirmed`)."""
        with self._lock:
            return self._drops

    def registration_confirmed(self, drops_before: int) -> bool:
        """The worker is registered (again) with all its jobs, providers and rooms.

        ``drops_before`` is :meth:`drops` from before the re-registration began. If the
        connection dropped while it ran, nothing is confirmed: the rooms are gone again, and
        another re-registration is due. Returns whether the contact is confirmed.
        """
        with self._lock:
            if self._drops != drops_before:
                self._contact.resync_due = True
                return False
            self._contact.socket_down = False
            self._contact.unconfirmed = False
        self.task_ready.set()
        return True
