"""Supervision: heartbeats, outages, re-registration after a reconnect or a restart.

The :class:`Supervisor` runs on one thread (``joblib-supervisor``). It beats every
``heartbeat_interval``; while the registration is uncertain it probes every second, so an
outage is measured closely. After a Socket.IO reconnection, or a 404 answered to a heartbeat
once contact was lost, it re-attaches the worker with all its jobs, providers and rooms. It
stops the manager when the server is unreachable for too long, when the worker was deleted
on purpose, or when the server refuses to take it back. The decisions are made on
:class:`~joblib_app.client.state.ManagerState` and on typed errors, never on message text.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from joblib_app.client.errors import (
    ApiError,
    JoblibClientError,
    NotFound,
    ServerUnreachable,
    WorkerGone,
)
from joblib_app.client.http import ApiClient
from joblib_app.client.realtime import RoomJoinError
from joblib_app.client.registry import Registry
from joblib_app.client.state import GoneVerdict, ManagerState, StopCause
from joblib_app.client.threads import OwnedThreads

logger = logging.getLogger(__name__)

# While the registration is uncertain, the supervisor probes the server this often.
PROBE_INTERVAL_SECONDS = 1.0
# An ongoing outage is logged at WARNING at most this often (DEBUG in between).
OUTAGE_LOG_INTERVAL_SECONDS = 5.0


@dataclass(slots=True)
class HeartbeatSchedule:
    """When the next heartbeat is due. Pure: the caller passes the clock."""

    interval: float
    due: float
    probe_interval: float = PROBE_INTERVAL_SECONDS

    def wait_time(self, now: float, *, recovering: bool) -> float:
        """Seconds to sleep before the next beat; at most ``probe_interval`` when recovering."""
        if recovering:
            self.due = min(self.due, now + self.probe_interval)
        return max(0.0, self.due - now)

    def beat_sent(self, now: float) -> None:
        """A beat goes out now: the next is one interval away."""
        self.due = now + self.interval

    def beat_unanswered(self, now: float) -> None:
        """The beat got no answer: check again soon, so the outage is measured closely."""
        self.due = now + min(self.probe_interval, self.interval)


class ClaimBackoff:
    """The pause after the n-th failed claim in a row: 0.2 s doubling up to 2 s."""

    def __init__(self, base: float = 0.1, cap: float = 2.0) -> None:
        self._base = base
        self._cap = cap
        self._failures = 0

    def failed(self) -> float:
        """Count a failure; returns how long to pause."""
        self._failures += 1
        delay: float = self._base * 2 ** min(self._failures, 10)
        return min(delay, self._cap)

    def succeeded(self) -> None:
        """A claim went through: the next failure starts from the base again."""
        self._failures = 0


class Supervisor:
    """Keeps this worker registered on the server; see the module docstring."""

    def __init__(
        self,
        api: ApiClient,
        state: ManagerState,
        registry: Registry,
        *,
        heartbeat_interval: float,
        max_unreachable_seconds: float | None,
    ) -> None:
        self._api = api
        self._state = state
        self._registry = registry
        self._heartbeat_interval = heartbeat_interval
        self._max_unreachable = max_unreachable_seconds
        self._threads = OwnedThreads("supervisor")
        self._started = False
        self._last_outage_log = 0.0

    def start(self) -> None:
        """Start the supervising thread (once; not after the manager stopped)."""
        if not self._started and not self._state.stopping:
            self._started = True
            self._threads.start(self._supervise)

    def join(self, timeout: float) -> None:
        """Join the supervising thread (it ends once the manager stops)."""
        self._threads.join_all(timeout)

    # -- Socket.IO callbacks (python-socketio threads) ----------------------------------

    def on_socket_connect(self, first: bool) -> None:
        """A (re)connection: after a reconnection the server forgot the rooms, maybe more."""
        if not first:
            self._state.socket_reconnected(has_worker=self._registry.worker_id is not None)

    def on_socket_disconnect(self) -> None:
        """A lost connection is the first sign of an outage: count it from now."""
        self._api.outage.record_failure()
        self._state.socket_dropped()

    # -- outages and stopping ------------------------------------------------------------

    def note_unreachable(self, exc: Exception) -> None:
        """A request got no answer: stop once the outage lasts ``max_unreachable_seconds``."""
        self._state.contact_failed()
        elapsed = self._api.outage.elapsed()
        if self._api.outage.exceeded(self._max_unreachable):
            self.stop(StopCause.UNREACHABLE, f"server unreachable for {elapsed:.0f}s ({exc})")
            return
        now = time.monotonic()
        if now - self._last_outage_log >= OUTAGE_LOG_INTERVAL_SECONDS:
            self._last_outage_log = now
            logger.warning("Server unreachable for %.1fs: %s", elapsed, exc)
        else:
            logger.debug("Server unreachable for %.1fs: %s", elapsed, exc)

    def stop(self, cause: StopCause, reason: str) -> None:
        """Stop the manager on its own (a no-op when it is already stopping)."""
        if self._state.stop_on_own(cause, reason):
            logger.error("Worker stopping: %s", reason)

    def retry_budget(self) -> float | None:
        """How long a request may still retry before the outage limit is reached."""
        if self._max_unreachable is None:
            return None
        return max(0.0, self._max_unreachable - self._api.outage.elapsed())

    def delete_worker(self, worker_id: str) -> None:
        """Delete ``worker_id`` on the server; a worker already gone is no failure."""
        try:
            self._api.delete_worker(worker_id)
        except (WorkerGone, NotFound):
            logger.debug("Worker %s was already deleted", worker_id)
        except JoblibClientError as exc:
            logger.warning("Could not delete worker %s: %s", worker_id, exc)

    # -- the loop ------------------------------------------------------------------------

    def _supervise(self) -> None:
        state = self._state
        schedule = HeartbeatSchedule(
            self._heartbeat_interval, time.monotonic() + self._heartbeat_interval
        )
        while not state.stopping:
            if state.take_resync():
                self._resync_safely()
                continue
            delay = schedule.wait_time(time.monotonic(), recovering=state.recovering)
            if state.supervisor_wake.wait(delay):
                state.supervisor_wake.clear()
                continue
            schedule.beat_sent(time.monotonic())
            try:
                self._api.heartbeat(self._registry.require_worker())
            except ServerUnreachable as exc:
                self.note_unreachable(exc)
                schedule.beat_unanswered(time.monotonic())
            except WorkerGone as exc:
                self._on_worker_gone(exc)
            except ApiError as exc:
                logger.warning("Heartbeat failed: %s", exc)
            else:
                if state.heartbeat_answered():
                    logger.info(
                        "Server reachable again; worker %s still registered",
                        self._registry.worker_id,
                    )

    def _on_worker_gone(self, exc: WorkerGone) -> None:
        verdict = self._state.worker_gone()
        if verdict is GoneVerdict.AWAIT_RECONNECT:
            logger.debug("Heartbeat refused while Socket.IO is down: %s", exc)
        elif verdict is GoneVerdict.RESYNC:
            logger.info(
                "Worker %s was removed during the outage; re-registering",
                self._registry.worker_id,
            )
        else:
            self.stop(StopCause.WORKER_GONE, f"worker registration gone ({exc})")

    def _resync_safely(self) -> None:
        try:
            self._resync()
        except (ServerUnreachable, RoomJoinError) as exc:
            # Still down, or the connection dropped again: try again shortly.
            logger.warning("Re-registration failed, will retry: %s", exc)
            if isinstance(exc, ServerUnreachable):
                self.note_unreachable(exc)
            self._state.resync_failed()
            self._state.stop_requested.wait(PROBE_INTERVAL_SECONDS)
        except ApiError as exc:
            self.stop(StopCause.REFUSED, f"re-registration refused ({exc})")

    def _resync(self) -> None:
        """Re-attach this worker, with all its jobs, providers and rooms.

        Runs after a Socket.IO reconnection (to this server process, another one, or the
        same server restarted). The server keeps a dropped connection's worker for
        ``worker_reconnect_grace_seconds``, and a restarting server keeps it too: while the
        server still knows the id, it is kept, so the tasks in flight can be reported.
        Only after a 404 does a fresh worker take over every registration (and the old
        one is deleted, in case it lingers).
        """
        drops_before = self._state.drops()
        with self._registry.lock:
            old_id = self._registry.worker_id
            if old_id is None:
                self._state.registration_confirmed(drops_before)
                return
            if self._still_registered(old_id):
                new_id = old_id
            else:
                new_id = self._api.create_worker(retry_for=self.retry_budget())
            self._registry.reattach(new_id, retry_for=self.retry_budget())
        confirmed = self._state.registration_confirmed(drops_before)
        if new_id == old_id:
            logger.info("Re-attached as worker %s", new_id)
        else:
            logger.info("Re-registered as worker %s (was %s)", new_id, old_id)
            self.delete_worker(old_id)
        if not confirmed:
            logger.info("The Socket.IO connection dropped during the re-registration: again")

    def _still_registered(self, worker_id: str) -> bool:
        """Heartbeat ``worker_id``: False if the server no longer knows it."""
        try:
            self._api.heartbeat(worker_id, retry_for=self.retry_budget())
        except WorkerGone:
            return False
        return True
