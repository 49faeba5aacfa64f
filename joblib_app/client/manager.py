"""JobManager: the synchronous, thread-based worker SDK.

A manager owns one worker on the server. It registers jobs and providers for it, claims
and runs tasks (by hand with :meth:`JobManager.claim` / :meth:`JobManager.listen`, or in
the background when ``execute=`` is given), answers provider reads, keeps the worker alive
with heartbeats, and re-creates it after the Socket.IO connection comes back (the server
deletes a worker whose connection dropped).

Threads: a *supervisor* (heartbeats and re-registration after a reconnect) starts with
the worker; a *claim loop* starts with the first registration when ``execute=`` is set.
python-socketio runs event callbacks on threads of its own.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import FrameType, TracebackType
from typing import Any, TypeVar, overload

import httpx
import pydantic_core

from joblib_app.client.errors import ApiError, JoblibClientError, ServerUnreachable
from joblib_app.client.handles import TaskHandle
from joblib_app.client.http import ApiClient
from joblib_app.client.models import (
    GLOBAL_ROOM,
    ClaimedTask,
    JobRegistration,
    ProviderRegistration,
    full_name,
)
from joblib_app.client.realtime import RoomJoinError, SocketLink
from joblib_app.client.runner import report_progress, run_task
from joblib_app.extension import Extension, Provider, category_of

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Extension)
Executor = Callable[[ClaimedTask[Any]], Any]

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# Answers meaning "this worker no longer exists for you" rather than a passing fault.
_GONE_STATUSES = frozenset({403, 404})


class JobManager(Mapping[str, type[Extension]]):
    """A worker connected to a joblib-app server.

    ``base_url`` is where the host mounted the sub-app (``http://host:8000/v1/joblib``).
    Authenticate with ``token`` (sent as ``Authorization: Bearer``, and as Socket.IO auth)
    or with explicit ``headers``.

    The manager is a read-only mapping from job full names to the registered extension
    classes. Use it as a context manager, or call :meth:`disconnect` when done.

    Args:
        execute: run each claimed task in a background claim loop. The loop marks the task
            running, calls ``execute(task)``, then completes it, or fails it with the
            exception's text if ``execute`` raised.
        use_socketio: open a Socket.IO connection for ``task_available`` wake-ups and
            provider requests. Without it tasks still arrive through the claim long-poll,
            but providers cannot be served.
        heartbeat_interval: seconds between heartbeats.
        claim_wait_seconds: how long one claim long-poll may block on the server.
        polling_interval: delay between claims if the server does not honour the long-poll.
        max_unreachable_seconds: stop the manager once the server has not answered for
            this long (``None``: keep trying forever).
        startup_timeout: how long connecting and the first registrations keep retrying.
        shutdown_timeout: how long :meth:`disconnect` waits for the task in flight.
        request_timeout: timeout of ordinary HTTP requests.
        concurrency: with ``execute``, how many tasks run at once, each claimed by its own
            claim loop (a thread).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        execute: Executor | None = None,
        use_socketio: bool = True,
        heartbeat_interval: float = 15.0,
        claim_wait_seconds: float = 25.0,
        polling_interval: float = 2.0,
        max_unreachable_seconds: float | None = 120.0,
        startup_timeout: float | None = 30.0,
        shutdown_timeout: float | None = 60.0,
        request_timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        self._execute = execute
        self._heartbeat_interval = heartbeat_interval
        self._claim_wait = claim_wait_seconds
        self._polling_interval = polling_interval
        self._max_unreachable = max_unreachable_seconds
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout

        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._task_ready = threading.Event()
        self._wake_supervisor = threading.Event()
        self._resync_needed = threading.Event()
        self._socket_lost = threading.Event()
        # Set from the first failed contact until the server has confirmed this worker again
        # (a heartbeat answered, or a re-registration done).
        self._contact_lost = threading.Event()
        self._last_outage_log = 0.0
        # Guards the registries and the worker id; re-entrant because registration and
        # re-registration after a reconnect call each other's helpers.
        self._registry_lock = threading.RLock()
        self._jobs: dict[str, JobRegistration] = {}
        self._providers: dict[str, ProviderRegistration] = {}
        self._worker_id: str | None = None
        # `_busy` counts the tasks executing; disconnect waits on this condition for them.
        self._state = threading.Condition()
        self._busy = 0
        self._concurrency = concurrency
        # Claimed tasks not yet reported finished, by id: where a cancellation is delivered.
        self._open_tasks: dict[str, ClaimedTask[Any]] = {}
        # Set once disconnect is past waiting for the task in flight: the worker is about
        # to be deleted, so a task claimed from now on is left to the server to requeue.
        self._closing = False
        self._disconnect_lock = threading.Lock()
        self._disconnected = False
        self._supervisor: threading.Thread | None = None
        self._claimers: list[threading.Thread] = []
        self._claim_failures = 0

        self.api = ApiClient(
            base_url,
            headers=all_headers,
            timeout=request_timeout,
            stop=self._stop,
            transport=transport,
        )
        self._link: SocketLink | None = None
        if use_socketio:
            self._link = SocketLink(
                base_url,
                headers=all_headers,
                token=token or _bearer_of(all_headers),
                on_task_available=self._on_task_available,
                on_provider_request=self._on_provider_request,
                on_connect=self._on_socket_connect,
                on_disconnect=self._on_socket_disconnect,
                call_timeout=request_timeout,
                on_task_cancel_requested=self._on_task_cancel_requested,
            )
            try:
                self._link.connect(retry_for=startup_timeout, stop=self._stop)
            except BaseException:
                self.api.close()
                raise

    # -- mapping protocol and context manager ------------------------------------------

    def __getitem__(self, job_full_name: str) -> type[Extension]:
        return self._jobs[job_full_name].cls

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._jobs))

    def __len__(self) -> int:
        return len(self._jobs)

    def __enter__(self) -> JobManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        return f"<JobManager {self.api.base_url} worker={self._worker_id} jobs={len(self)}>"

    # -- state -----------------------------------------------------------------------

    @property
    def worker_id(self) -> str | None:
        """The server's id of this worker, once one exists."""
        return self._worker_id

    @property
    def stopped(self) -> bool:
        """Whether the manager has stopped (disconnect, signal, or a fatal condition)."""
        return self._stop.is_set()

    @property
    def stop_reason(self) -> str | None:
        """Why the manager stopped on its own (registration gone, server unreachable)."""
        return self._stop_reason

    @property
    def handlers(self) -> dict[str, Any]:
        """The registered providers' handlers, by provider full name."""
        with self._registry_lock:
            return {name: reg.handler for name, reg in self._providers.items()}

    # -- workers ---------------------------------------------------------------------

    def create_worker(self) -> str:
        """Create a worker for the authenticated principal and start its heartbeats.

        Called for you by the first :meth:`register` / :meth:`register_provider`.
        """
        with self._registry_lock:
            response = self.api.request("POST", "/workers", retry_for=self._startup_timeout)
            self._worker_id = str(response.json()["id"])
        logger.info("Worker %s created", self._worker_id)
        self._start_supervisor()
        return self._worker_id

    def heartbeat(self) -> None:
        """Tell the server this worker is alive (``PATCH /workers/{id}``)."""
        self.api.request("PATCH", f"/workers/{self._require_worker()}", retry_for=0)

    # -- jobs ------------------------------------------------------------------------

    @overload
    def register(
        self,
        extension: type[E],
        /,
        *,
        room: str = GLOBAL_ROOM,
        run_kwargs: Mapping[str, Any] | None = None,
    ) -> type[E]: ...

    @overload
    def register(
        self,
        extension: None = None,
        /,
        *,
        room: str = GLOBAL_ROOM,
        run_kwargs: Mapping[str, Any] | None = None,
    ) -> Callable[[type[E]], type[E]]: ...

    def register(
        self,
        extension: type[E] | None = None,
        /,
        *,
        room: str = GLOBAL_ROOM,
        run_kwargs: Mapping[str, Any] | None = None,
    ) -> type[E] | Callable[[type[E]], type[E]]:
        """Register an :class:`Extension` subclass as a job served by this worker.

        Works as ``manager.register(Cls)``, ``@manager.register`` and
        ``@manager.register(room="r1", run_kwargs={...})``. The job's full name is
        ``{room}:{category}:{ClassName}``; ``run_kwargs`` reach ``extension.run`` through
        :attr:`ClaimedTask.run_kwargs`.
        """

        def decorator(cls: type[E]) -> type[E]:
            self._register_job(JobRegistration(cls, room, dict(run_kwargs or {})))
            return cls

        return decorator if extension is None else decorator(extension)

    def _register_job(self, registration: JobRegistration) -> None:
        with self._registry_lock:
            worker_id = self._worker_id or self.create_worker()
            self._put_job(registration, worker_id, retry_for=self._startup_timeout)
            self._jobs[registration.full_name] = registration
            if self._link is not None:
                self._link.join_job(registration.full_name, worker_id)
        logger.info("Registered job %s", registration.full_name)
        self._start_claimer()

    def _put_job(
        self, registration: JobRegistration, worker_id: str, retry_for: float | None
    ) -> None:
        self.api.request(
            "PUT",
            f"/rooms/{registration.room_id}/jobs",
            json={
                "category": registration.category,
                "name": registration.cls.__name__,
                "schema": registration.cls.model_json_schema(),
                "worker_id": worker_id,
            },
            retry_for=retry_for,
        )

    # -- providers -------------------------------------------------------------------

    def register_provider(
        self,
        provider: type[Provider],
        *,
        name: str,
        handler: Any,
        room: str = GLOBAL_ROOM,
    ) -> str:
        """Serve reads of ``provider`` under ``{room}:{category}:{name}``; returns its id.

        Each ``provider_request`` is answered by validating the parameters into
        ``provider``, calling ``read(handler)`` and uploading the result: JSON-encoded for
        JSON content types, raw bytes otherwise. Needs the Socket.IO connection.
        """
        if self._link is None:
            raise JoblibClientError("providers are requested over Socket.IO: use_socketio=True")
        with self._registry_lock:
            worker_id = self._worker_id or self.create_worker()
            registration = ProviderRegistration(provider, name, handler, room, provider_id="")
            registration.provider_id = self._put_provider(
                registration, worker_id, retry_for=self._startup_timeout
            )
            self._providers[registration.full_name] = registration
            self._link.join_provider(registration.full_name, worker_id)
        logger.info("Registered provider %s", registration.full_name)
        return registration.provider_id

    def _put_provider(
        self, registration: ProviderRegistration, worker_id: str, retry_for: float | None
    ) -> str:
        response = self.api.request(
            "PUT",
            f"/rooms/{registration.room_id}/providers",
            json={
                "category": registration.category,
                "name": registration.name,
                "schema": registration.cls.model_json_schema(),
                "content_type": registration.cls.content_type,
                "worker_id": worker_id,
            },
            retry_for=retry_for,
        )
        return str(response.json()["id"])

    def unregister_provider(self, provider_full_name: str) -> None:
        """Stop serving a provider (``DELETE /providers/{id}``); unknown names are ignored."""
        with self._registry_lock:
            registration = self._providers.pop(provider_full_name, None)
            worker_id = self._worker_id
        if registration is None:
            return
        if self._link is not None and worker_id is not None:
            try:
                self._link.leave_provider(provider_full_name, worker_id)
            except RoomJoinError as exc:
                logger.warning("Could not leave provider room: %s", exc)
        self.api.request("DELETE", f"/providers/{registration.provider_id}", retry_for=5.0)

    # -- tasks: submitting and following ---------------------------------------------

    def submit(self, extension: Extension, room: str, job_room: str = GLOBAL_ROOM) -> TaskHandle:
        """Submit a task running ``extension`` (its fields are the payload).

        Returns a :class:`TaskHandle`: the task id (a ``str``) with ``wait(timeout)`` and
        ``result(timeout)``. ``room`` is where the task lives; ``job_room`` is where the job
        is registered.
        """
        job = full_name(job_room, category_of(type(extension)), type(extension).__name__)
        response = self.api.request(
            "POST",
            f"/rooms/{room}/tasks/{job}",
            json={"payload": extension.model_dump(mode="json")},
            retry_for=5.0,
        )
        return TaskHandle(str(response.json()["id"]), self)

    def cancel_by_id(self, task_id: str) -> dict[str, Any]:
        """Cancel the task ``task_id`` (as its submitter, or the claiming worker's owner)."""
        response = self.api.request(
            "PATCH", f"/tasks/{task_id}", json={"status": "cancelled"}, retry_for=10.0
        )
        return response.json()

    def get_task(self, task_id: str, *, wait: float | None = None) -> dict[str, Any]:
        """The task as the server has it; with ``wait``, long-poll until it is terminal."""
        headers = {"Prefer": f"wait={_seconds(wait)}"} if wait else None
        timeout = self.api.timeout + (wait or 0)
        response = self.api.request(
            "GET", f"/tasks/{task_id}", headers=headers, timeout=timeout, retry_for=5.0
        )
        return response.json()

    def wait_for_task(
        self, task_id: str, timeout: float | None = None, *, poll_wait: float = 30.0
    ) -> dict[str, Any]:
        """Block until the task is completed, failed or cancelled, and return it.

        Uses the server's long-poll, so the answer comes as soon as the task finishes.
        Raises :class:`TimeoutError` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = poll_wait
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"task {task_id} not finished after {timeout}s")
            task = self.get_task(task_id, wait=max(wait, 0.001))
            if task["status"] in TERMINAL_STATUSES:
                return task

    # -- tasks: claiming and reporting -----------------------------------------------

    def claim(self, *, wait: float = 0.0) -> ClaimedTask[Any] | None:
        """Claim the oldest pending task of this worker's jobs, or return None.

        With ``wait`` the server holds the request until a task arrives or ``wait`` seconds
        pass. A task this manager cannot load (unknown job, invalid payload) is failed with
        the reason and None is returned.
        """
        task, _ = self._claim_raw(wait)
        return None if task is None else self._load(task)

    def listen(
        self,
        stop_event: threading.Event | None = None,
        *,
        wait: float | None = None,
    ) -> Iterator[ClaimedTask[Any]]:
        """Yield claimed tasks until ``stop_event`` is set or the manager stops.

        Blocks on the claim long-poll between tasks (``wait`` seconds per request, default
        ``claim_wait_seconds``), so tasks arrive without polling delay. Transport errors are
        retried until ``max_unreachable_seconds``; then :class:`ServerUnreachable` is raised.
        The caller marks each task with :meth:`start`, :meth:`complete` or :meth:`fail`.
        """
        while not self._stop.is_set() and not (stop_event and stop_event.is_set()):
            task = self._next_task(wait=self._claim_wait if wait is None else wait)
            if task is None:
                continue
            claimed = self._load(task)
            if claimed is not None:
                yield claimed
        if self._stop_reason and "unreachable" in self._stop_reason:
            raise ServerUnreachable(self._stop_reason)

    def start(self, task: ClaimedTask[Any]) -> None:
        """Mark a claimed task running."""
        self._transition(task.task_id, "running")

    def complete(self, task: ClaimedTask[Any], *, result: Any = None) -> None:
        """Mark a running task completed, storing ``result`` (JSON data) if given."""
        extra = None if result is None else {"result": result}
        self._transition(task.task_id, "completed", extra=extra)

    def fail(self, task: ClaimedTask[Any], error: str) -> None:
        """Mark a claimed or running task failed with ``error``."""
        self.fail_by_id(task.task_id, error)

    def fail_by_id(self, task_id: str, error: str) -> None:
        """Mark the task ``task_id`` failed with ``error``, without a :class:`ClaimedTask`."""
        self._transition(task_id, "failed", error)

    def cancel(self, task: ClaimedTask[Any]) -> None:
        """Cancel a claimed or running task."""
        self._transition(task.task_id, "cancelled")

    def _transition(
        self,
        task_id: str,
        status: str,
        error: str | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        body: dict[str, Any] = {"status": status, **(extra or {})}
        if error is not None:
            body["error"] = error
        if status in TERMINAL_STATUSES:
            self._open_tasks.pop(task_id, None)
        self.api.request("PATCH", f"/tasks/{task_id}", json=body, retry_for=10.0)

    def _claim_raw(self, wait: float) -> tuple[dict[str, Any] | None, bool]:
        """``(task or None, whether the server honoured the wait)``."""
        worker_id = self._require_worker()
        headers = {"Prefer": f"wait={_seconds(wait)}"} if wait > 0 else None
        response = self.api.request(
            "POST",
            "/tasks/claim",
            json={"worker_id": worker_id},
            headers=headers,
            timeout=self.api.timeout + wait,
            # A claim that reached the server may have taken a task: never send it twice.
            retry_for=0,
        )
        applied = "preference-applied" in response.headers
        return response.json().get("task"), applied

    def _next_task(self, wait: float) -> dict[str, Any] | None:
        """One claim attempt of the serving loops, absorbing passing faults.

        Returns None when there was nothing to claim or the attempt failed (after the
        appropriate pause). Stops the manager for good on the fatal conditions.
        """
        if self._recovering():
            # The registration is unconfirmed (the supervisor is on it): a claim could only
            # 404 or race the re-registration.
            self._task_ready.wait(0.2)
            return None
        self._task_ready.clear()
        began = time.monotonic()
        try:
            task, applied = self._claim_raw(wait)
        except ServerUnreachable as exc:
            self._on_unreachable(exc)
            self._stop.wait(self._backoff())
            return None
        except ApiError as exc:
            if exc.status_code in _GONE_STATUSES and not self._recovering():
                self._stop_self(f"worker registration gone ({exc})")
            else:
                logger.warning("Claim failed: %s", exc)
                self._stop.wait(self._backoff())
            return None
        self._claim_failures = 0
        answered_at_once = wait <= 0 or time.monotonic() - began < wait / 2
        if task is None and not applied and answered_at_once:
            # The server answered at once without a task: it does not long-poll claims (or
            # another worker won the race). Wait for a wake-up instead of spinning.
            self._task_ready.wait(self._polling_interval)
        return task

    def _backoff(self) -> float:
        """The pause after the n-th claim failure in a row: 0.2 s doubling up to 2 s."""
        self._claim_failures += 1
        return min(0.1 * 2 ** min(self._claim_failures, 10), 2.0)

    def _load(self, task: dict[str, Any]) -> ClaimedTask[Any] | None:
        """Turn a claimed task into a :class:`ClaimedTask`, failing it if that is impossible."""
        task_id = str(task["id"])
        registration = self._jobs.get(task["job_name"])
        try:
            if registration is None:
                raise LookupError(f"job {task['job_name']} is not served by this worker")
            extension = registration.cls.model_validate(task.get("payload") or {})
        except Exception as exc:
            logger.error("Cannot run task %s: %s", task_id, exc)
            self._fail_quietly(task_id, f"{type(exc).__name__}: {exc}")
            return None
        claimed = ClaimedTask(
            task_id=task_id,
            job_name=task["job_name"],
            room_id=task["room_id"],
            extension=extension,
            run_kwargs=dict(registration.run_kwargs),
            reporter=self._report_progress,
        )
        self._open_tasks[task_id] = claimed
        return claimed

    def _report_progress(
        self, task: ClaimedTask[Any], progress: float, message: str | None
    ) -> None:
        report_progress(self.api, task, progress, message)

    def _fail_quietly(self, task_id: str, error: str) -> None:
        try:
            self.fail_by_id(task_id, error)
        except JoblibClientError as exc:
            logger.warning("Could not mark task %s failed: %s", task_id, exc)

    # -- auto-serve ------------------------------------------------------------------

    def _start_supervisor(self) -> None:
        if self._supervisor is None and not self._stop.is_set():
            self._supervisor = threading.Thread(
                target=self._supervise, name="joblib-supervisor", daemon=True
            )
            self._supervisor.start()

    def _start_claimer(self) -> None:
        if self._execute is not None and not self._claimers and not self._stop.is_set():
            for index in range(self._concurrency):
                claimer = threading.Thread(
                    target=self._claim_loop, name=f"joblib-claimer-{index}", daemon=True
                )
                self._claimers.append(claimer)
                claimer.start()

    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            task = self._next_task(self._claim_wait)
            if task is not None:
                self._serve(task)

    def _serve(self, task: dict[str, Any]) -> None:
        """Run one claimed task through ``execute`` and report the outcome."""
        with self._state:
            # Even when the stop came while this claim was in flight: the task is ours now,
            # and ``disconnect`` waits for the tasks in flight before deleting the worker.
            # Only once it stopped waiting, the worker's deletion puts the task back in its
            # queue (it never started), where another worker runs it.
            accepted = not self._closing
            if accepted:
                self._busy += 1
        if not accepted:
            logger.info("Task %s arrived as the worker was leaving: left to its queue", task["id"])
            return
        try:
            claimed = self._load(task)
            if claimed is None:
                return
            try:
                self.start(claimed)
            except JoblibClientError as exc:
                # Cancelled in the meantime, or the server lost us: not ours to run any more.
                logger.warning("Could not start task %s: %s", claimed.task_id, exc)
                return
            assert self._execute is not None
            run_task(self._execute, claimed, complete=self.complete, fail=self._fail_quietly)
        finally:
            self._open_tasks.pop(str(task["id"]), None)
            with self._state:
                self._busy -= 1
                self._state.notify_all()

    def _supervise(self) -> None:
        """Heartbeats, and re-registration after a Socket.IO reconnection."""
        next_beat = time.monotonic() + self._heartbeat_interval
        while not self._stop.is_set():
            if self._resync_needed.is_set():
                self._resync_needed.clear()
                self._resync_safely()
                continue
            if self._recovering():
                # Beat (probe) at least every second while the connection is down.
                next_beat = min(next_beat, time.monotonic() + 1.0)
            if self._wake_supervisor.wait(max(0.0, next_beat - time.monotonic())):
                self._wake_supervisor.clear()
                continue
            next_beat = time.monotonic() + self._heartbeat_interval
            try:
                self.heartbeat()
            except ServerUnreachable as exc:
                self._on_unreachable(exc)
                # Check again soon, so an outage is measured closely.
                next_beat = time.monotonic() + min(1.0, self._heartbeat_interval)
            except ApiError as exc:
                self._on_heartbeat_refused(exc)
            else:
                if self._contact_lost.is_set():
                    logger.info(
                        "Server reachable again; worker %s still registered", self._worker_id
                    )
                    self._contact_lost.clear()
                    self._task_ready.set()

    def _on_heartbeat_refused(self, exc: ApiError) -> None:
        """Tell a worker deleted on purpose from one removed while it was out of reach."""
        if exc.status_code not in _GONE_STATUSES:
            logger.warning("Heartbeat failed: %s", exc)
        elif self._socket_lost.is_set():
            # The server dropped the worker with the connection; the reconnection re-registers.
            logger.debug("Heartbeat refused while Socket.IO is down: %s", exc)
        elif self._contact_lost.is_set() or self._resync_needed.is_set():
            # Swept (heartbeat timeout) or cleaned up while unreachable: not a request to leave.
            logger.info("Worker %s was removed during the outage; re-registering", self._worker_id)
            self._resync_needed.set()
        else:
            self._stop_self(f"worker registration gone ({exc})")

    def _resync_safely(self) -> None:
        try:
            self._resync()
        except (ServerUnreachable, RoomJoinError) as exc:
            # Still down, or the connection dropped again: try again shortly.
            logger.warning("Re-registration failed, will retry: %s", exc)
            if isinstance(exc, ServerUnreachable):
                self._on_unreachable(exc)
            self._resync_needed.set()
            self._stop.wait(1.0)
        except ApiError as exc:
            self._stop_self(f"re-registration refused ({exc})")

    def _resync(self) -> None:
        """Re-attach this worker, with all its jobs, providers and rooms.

        Runs after a Socket.IO reconnection (to this server process, another one, or the
        same server restarted). The server keeps a dropped connection's worker for
        ``worker_reconnect_grace_seconds``, and a restarting server keeps it too: while the
        server still knows the id, it is kept, so the tasks in flight can be reported.
        Only after a 404 does a fresh worker take over every registration (and the old
        one is deleted, in case it lingers).
        """
        with self._registry_lock:
            old_id = self._worker_id
            if old_id is None:
                self._socket_lost.clear()
                self._contact_lost.clear()
                return
            new_id = old_id if self._still_registered(old_id) else self._fresh_worker()
            for job in self._jobs.values():
                self._put_job(job, new_id, retry_for=self._retry_budget())
            for provider in self._providers.values():
                provider.provider_id = self._put_provider(
                    provider, new_id, retry_for=self._retry_budget()
                )
            self._worker_id = new_id
            if self._link is not None:
                for name in self._jobs:
                    self._link.join_job(name, new_id)
                for name in self._providers:
                    self._link.join_provider(name, new_id)
        self._socket_lost.clear()
        self._contact_lost.clear()
        if new_id == old_id:
            logger.info("Re-attached as worker %s", new_id)
        else:
            logger.info("Re-registered as worker %s (was %s)", new_id, old_id)
            self._delete_worker(old_id)
        self._task_ready.set()

    def _still_registered(self, worker_id: str) -> bool:
        """Heartbeat ``worker_id``: ``False`` if the server no longer knows it (404)."""
        try:
            self.api.request("PATCH", f"/workers/{worker_id}", retry_for=self._retry_budget())
        except ApiError as exc:
            if exc.status_code in _GONE_STATUSES:
                return False
            raise
        return True

    def _fresh_worker(self) -> str:
        response = self.api.request("POST", "/workers", retry_for=self._retry_budget())
        return str(response.json()["id"])

    def _retry_budget(self) -> float | None:
        if self._max_unreachable is None:
            return None
        return max(0.0, self._max_unreachable - self.api.outage.elapsed())

    # -- Socket.IO callbacks (python-socketio threads) --------------------------------

    def _on_task_available(self, _data: dict[str, Any]) -> None:
        self._task_ready.set()

    def _on_task_cancel_requested(self, data: dict[str, Any]) -> None:
        task = self._open_tasks.get(str(data.get("task_id")))
        if task is not None:
            logger.info("Task %s cancelled on the server", task.task_id)
            task.cancelled.set()

    def _on_socket_connect(self, first: bool) -> None:
        if first:
            return
        if self._worker_id is None:
            self._socket_lost.clear()
            return
        self._resync_needed.set()
        self._wake_supervisor.set()

    def _on_socket_disconnect(self) -> None:
        # A lost connection is the first sign of an outage: count it from now, and let the
        # supervisor probe the server so the outage is measured even with no task traffic.
        self.api.outage.record_failure()
        self._contact_lost.set()
        self._socket_lost.set()
        self._wake_supervisor.set()

    def _on_provider_request(self, data: dict[str, Any]) -> None:
        provider_name = data.get("provider_name")
        request_id = data.get("request_id")
        registration = self._providers.get(str(provider_name))
        if registration is None or not request_id:
            logger.warning("Ignoring provider_request for %s", provider_name)
            return
        content_type = registration.cls.content_type
        try:
            raw = data.get("params") or "{}"
            params = json.loads(raw) if isinstance(raw, str | bytes) else raw
            instance = registration.cls.model_validate(params)
            body = _encode_result(instance.read(registration.handler), registration.cls)
        except Exception as exc:
            # The readers get a 502 with this detail; the traceback stays in this log.
            logger.exception("Provider %s failed request %s", provider_name, request_id)
            body = _problem_body(exc)
            content_type = "application/problem+json"
        try:
            self.api.request(
                "POST",
                f"/providers/{registration.provider_id}/results",
                content=body,
                headers={
                    "X-Request-Hash": str(request_id),
                    "Content-Type": content_type,
                },
                retry_for=0,
            )
        except JoblibClientError as exc:
            logger.warning("Could not upload %s result %s: %s", provider_name, request_id, exc)

    # -- stopping --------------------------------------------------------------------

    def _recovering(self) -> bool:
        """Whether contact was lost and this worker's registration is not yet confirmed."""
        return (
            self._contact_lost.is_set()
            or self._socket_lost.is_set()
            or self._resync_needed.is_set()
        )

    def _on_unreachable(self, exc: Exception) -> None:
        self._contact_lost.set()
        elapsed = self.api.outage.elapsed()
        if self.api.outage.exceeded(self._max_unreachable):
            self._stop_self(f"server unreachable for {elapsed:.0f}s ({exc})")
            return
        now = time.monotonic()
        if now - self._last_outage_log >= 5.0:
            self._last_outage_log = now
            logger.warning("Server unreachable for %.1fs: %s", elapsed, exc)
        else:
            logger.debug("Server unreachable for %.1fs: %s", elapsed, exc)

    def _stop_self(self, reason: str) -> None:
        if self._stop.is_set():
            # Already stopping on request: a 404 from our own DELETE is no failure.
            return
        if self._stop_reason is None:
            self._stop_reason = reason
            logger.error("Worker stopping: %s", reason)
        self._wake_all()

    def _wake_all(self) -> None:
        self._stop.set()
        self._task_ready.set()
        self._wake_supervisor.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the manager stops, then :meth:`disconnect`; returns whether it stopped.

        SIGINT and SIGTERM (when called from the main thread) stop the manager gracefully:
        the task in flight finishes before the worker is deleted. A second signal gets the
        previous handler, so a second Ctrl-C interrupts at once.
        """
        restore: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, _frame: FrameType | None) -> None:
                logger.info("Received %s, shutting down", signal.Signals(signum).name)
                for sig, previous in restore.items():
                    signal.signal(sig, previous)
                self._wake_all()

            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.getsignal(sig)
                signal.signal(sig, on_signal)
        try:
            stopped = _wait_interruptibly(self._stop, timeout)
        finally:
            for sig, previous in restore.items():
                signal.signal(sig, previous)
        if stopped:
            self.disconnect()
        return stopped

    def disconnect(self) -> None:
        """Stop serving and delete the worker on the server. Idempotent and thread-safe.

        Waits (up to ``shutdown_timeout``) for the task in flight, leaves the Socket.IO rooms,
        deletes the worker (the server then soft-deletes jobs nobody else serves), and
        closes the connections.
        """
        with self._disconnect_lock:
            if self._disconnected:
                return
            self._disconnected = True
            with self._state:
                self._wake_all()
                if threading.current_thread() not in self._claimers:
                    self._state.wait_for(lambda: not self._busy, timeout=self._shutdown_timeout)
                self._closing = True
            with self._registry_lock:
                worker_id = self._worker_id
                jobs, providers = list(self._jobs), list(self._providers)
            if self._link is not None and worker_id is not None and self._link.connected:
                self._leave_rooms(worker_id, jobs, providers)
            if worker_id is not None:
                self._delete_worker(worker_id)
            if self._link is not None:
                self._link.close()
            for thread in (self._supervisor,):
                if thread is not None and thread is not threading.current_thread():
                    thread.join(timeout=2.0)
            self.api.close()
            logger.info("Worker %s disconnected", worker_id)

    def _leave_rooms(self, worker_id: str, jobs: list[str], providers: list[str]) -> None:
        assert self._link is not None
        try:
            for name in providers:
                self._link.leave_provider(name, worker_id)
            for name in jobs:
                self._link.leave_job(name, worker_id)
        except RoomJoinError as exc:
            # Deleting the worker below removes its memberships anyway.
            logger.debug("Leaving rooms failed: %s", exc)

    def _delete_worker(self, worker_id: str) -> None:
        try:
            self.api.request("DELETE", f"/workers/{worker_id}", retry_for=0)
        except ApiError as exc:
            if exc.status_code != 404:
                logger.warning("Could not delete worker %s: %s", worker_id, exc)
        except ServerUnreachable as exc:
            logger.warning("Could not delete worker %s: %s", worker_id, exc)

    def _require_worker(self) -> str:
        if self._worker_id is None:
            raise JoblibClientError("no worker yet: call create_worker() or register a job")
        return self._worker_id


# The main thread wakes this often while waiting, so that Python runs a signal handler
# promptly: a signal the OS delivered to another thread does not interrupt its wait.
_SIGNAL_CHECK_SECONDS = 0.1


def _wait_interruptibly(event: threading.Event, timeout: float | None) -> bool:
    """``event.wait(timeout)`` in short slices."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = _SIGNAL_CHECK_SECONDS
        if deadline is not None:
            step = min(step, max(0.0, deadline - time.monotonic()))
        if event.wait(step):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def _seconds(value: float) -> str:
    """A wait for the ``Prefer`` header, as a whole number of seconds when it is one."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _bearer_of(headers: Mapping[str, str]) -> str | None:
    for key, value in headers.items():
        if key.lower() == "authorization" and value.lower().startswith("bearer "):
            return value[7:]
    return None


def _problem_body(exc: Exception) -> bytes:
    """The problem+json a provider uploads when ``read`` raised."""
    problem = {
        "type": "/v1/problems/provider-error",
        "title": "Provider error",
        "status": 502,
        "detail": f"{type(exc).__name__}: {exc}"[:2000],
    }
    return json.dumps(problem).encode()


def _encode_result(result: Any, provider: type[Provider]) -> bytes:
    """The upload body of a provider result, by the provider's content type."""
    content_type = provider.content_type.split(";", 1)[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return pydantic_core.to_json(result)
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result)
    if isinstance(result, str):
        return result.encode()
    raise TypeError(
        f"{provider.__name__}.read returned {type(result).__name__}; "
        f"content type {provider.content_type} needs bytes"
    )
