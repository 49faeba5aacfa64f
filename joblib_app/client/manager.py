"""JobManager: the synchronous, thread-based worker SDK, as a facade over its parts.

A manager owns one worker on the server. The parts, one job each:

- :class:`~joblib_app.client.http.ApiClient`: every REST call;
- :class:`~joblib_app.client.realtime.SocketLink`: the Socket.IO contact;
- :class:`~joblib_app.client.supervisor.Supervisor`: heartbeats, outages, re-registration;
- :class:`~joblib_app.client.runner.TaskRunner`: claiming, running, reporting tasks;
- :class:`~joblib_app.client.provider_answers.ProviderAnswers`: serving provider reads;
- :class:`~joblib_app.client.registry.Registry`: the worker id and what it serves;
- :class:`~joblib_app.client.submitting.TaskSubmitter`: submitting and following tasks;
- :class:`~joblib_app.client.state.ManagerState`: the state they share.

Threads, all named ``joblib-...`` and joined by :meth:`JobManager.disconnect`: the supervisor,
the claim loops (with ``execute=``) and python-socketio's own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

import httpx

from joblib_app.client.errors import JoblibClientError
from joblib_app.client.http import ApiClient
from joblib_app.client.models import ClaimedTask, JobRegistration, ProviderRegistration
from joblib_app.client.provider_answers import ProviderAnswers
from joblib_app.client.realtime import SocketLink
from joblib_app.client.registry import Registry
from joblib_app.client.runner import Executor, TaskRunner
from joblib_app.client.signals import wait_for_stop
from joblib_app.client.state import ManagerState, StopCause
from joblib_app.client.submitting import TaskSubmitter
from joblib_app.client.supervisor import Supervisor
from joblib_app.domain.names import GLOBAL_ROOM
from joblib_app.domain.statuses import TaskStatus
from joblib_app.extension import Extension, Provider

__all__ = ["Executor", "JobManager"]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Extension)


class JobManager(TaskSubmitter, Mapping[str, type[Extension]]):
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
        transport: an httpx transport to send the REST calls through (tests).
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
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._request_timeout = request_timeout
        self._disconnect_lock = threading.Lock()
        self._disconnected = False

        self._state = ManagerState()
        self.api = ApiClient(
            base_url,
            headers=all_headers,
            timeout=request_timeout,
            stop=self._state.stop_requested,
            transport=transport,
        )
        self._registry = Registry(self.api)
        self._supervisor = Supervisor(
            self.api,
            self._state,
            self._registry,
            heartbeat_interval=heartbeat_interval,
            max_unreachable_seconds=max_unreachable_seconds,
        )
        self._runner = TaskRunner(
            self.api,
            self._state,
            self._registry,
            self._supervisor,
            execute=execute,
            concurrency=concurrency,
            claim_wait=claim_wait_seconds,
            polling_interval=polling_interval,
        )
        self._link: SocketLink | None = None
        if use_socketio:
            task_ready = self._state.task_ready
            self._link = SocketLink(
                base_url,
                headers=all_headers,
                token=token or _bearer_of(all_headers),
                on_task_available=lambda _data: task_ready.set(),
                on_provider_request=ProviderAnswers(self.api, self._registry).answer,
                on_connect=self._supervisor.on_socket_connect,
                on_disconnect=self._supervisor.on_socket_disconnect,
                call_timeout=request_timeout,
                on_task_cancel_requested=self._runner.deliver_cancel,
            )
            self._registry.use_link(self._link)
            try:
                self._link.connect(retry_for=startup_timeout, stop=self._state.stop_requested)
            except BaseException:
                self._link.close()
                self.api.close()
                raise

    # -- mapping protocol and context manager ------------------------------------------

    def __getitem__(self, job_full_name: str) -> type[Extension]:
        registration = self._registry.job(job_full_name)
        if registration is None:
            raise KeyError(job_full_name)
        return registration.cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.job_names())

    def __len__(self) -> int:
        return len(self._registry.job_names())

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
        return f"<JobManager {self.api.base_url} worker={self.worker_id} jobs={len(self)}>"

    # -- state -----------------------------------------------------------------------

    @property
    def worker_id(self) -> str | None:
        """The server's id of this worker, once one exists."""
        return self._registry.worker_id

    @property
    def stopped(self) -> bool:
        """Whether the manager has stopped (disconnect, signal, or a fatal condition)."""
        return self._state.stopping

    @property
    def stop_reason(self) -> str | None:
        """Why the manager stopped on its own (registration gone, server unreachable)."""
        return self._state.stop_reason

    @property
    def stop_cause(self) -> StopCause | None:
        """Why the manager stopped, as a :class:`StopCause` to decide on (None: serving)."""
        return self._state.stop_cause

    @property
    def handlers(self) -> dict[str, Any]:
        """The registered providers' handlers, by provider full name."""
        return {name: reg.handler for name, reg in self._registry.providers().items()}

    # -- workers ---------------------------------------------------------------------

    def create_worker(self) -> str:
        """Create a worker for the authenticated principal and start its heartbeats.

        Called for you by the first :meth:`register` / :meth:`register_provider`.
        """
        with self._registry.lock:
            worker_id = self.api.create_worker(retry_for=self._startup_timeout)
            self._registry.set_worker(worker_id)
        logger.info("Worker %s created", worker_id)
        self._supervisor.start()
        return worker_id

    def heartbeat(self) -> None:
        """Tell the server this worker is alive (``PATCH /workers/{id}``)."""
        self.api.heartbeat(self._registry.require_worker())

    # -- jobs and providers ----------------------------------------------------------

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
            registration = JobRegistration(cls, room, dict(run_kwargs or {}))
            with self._registry.lock:
                worker_id = self._registry.worker_id or self.create_worker()
                self._registry.add_job(registration, worker_id, retry_for=self._startup_timeout)
            logger.info("Registered job %s", registration.full_name)
            self._runner.start_claim_loops()
            return cls

        return decorator if extension is None else decorator(extension)

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
        registration = ProviderRegistration(provider, name, handler, room, provider_id="")
        with self._registry.lock:
            worker_id = self._registry.worker_id or self.create_worker()
            provider_id = self._registry.add_provider(
                registration, worker_id, retry_for=self._startup_timeout
            )
        logger.info("Registered provider %s", registration.full_name)
        return provider_id

    def unregister_provider(self, provider_full_name: str) -> None:
        """Stop serving a provider (``DELETE /providers/{id}``); unknown names are ignored."""
        self._registry.remove_provider(provider_full_name)

    # -- tasks: claiming and reporting -----------------------------------------------

    def claim(self, *, wait: float = 0.0) -> ClaimedTask[Any] | None:
        """Claim the oldest pending task of this worker's jobs, or return None.

        With ``wait`` the server holds the request until a task arrives or ``wait`` seconds
        pass. A task this manager cannot load (unknown job, invalid payload) is failed with
        the reason and None is returned.
        """
        return self._runner.claim(wait)

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
        return self._runner.listen(stop_event, wait)

    def start(self, task: ClaimedTask[Any]) -> None:
        """Mark a claimed task running."""
        self._runner.transition(task.task_id, TaskStatus.RUNNING)

    def complete(self, task: ClaimedTask[Any], *, result: Any = None) -> None:
        """Mark a running task completed, storing ``result`` (JSON data) if given."""
        extra = None if result is None else {"result": result}
        self._runner.transition(task.task_id, TaskStatus.COMPLETED, extra=extra)

    def fail(self, task: ClaimedTask[Any], error: str) -> None:
        """Mark a claimed or running task failed with ``error``."""
        self.fail_by_id(task.task_id, error)

    def fail_by_id(self, task_id: str, error: str) -> None:
        """Mark the task ``task_id`` failed with ``error``, without a :class:`ClaimedTask`."""
        self._runner.transition(task_id, TaskStatus.FAILED, error)

    def cancel(self, task: ClaimedTask[Any]) -> None:
        """Cancel a claimed or running task."""
        self._runner.transition(task.task_id, TaskStatus.CANCELLED)

    # -- stopping --------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the manager stops, then :meth:`disconnect`; returns whether it stopped.

        SIGINT and SIGTERM (when called from the main thread) stop the manager gracefully:
        the task in flight finishes before the worker is deleted. A second signal gets the
        previous handler, so a second Ctrl-C interrupts at once.
        """
        stopped = wait_for_stop(self._state.stop_requested, self._state.request_stop, timeout)
        if stopped:
            self.disconnect()
        return stopped

    def disconnect(self) -> None:
        """Stop serving and delete the worker on the server. Idempotent and thread-safe.

        Waits (up to ``shutdown_timeout``) for the task in flight, leaves the Socket.IO rooms,
        deletes the worker (the server then soft-deletes jobs nobody else serves), closes
        the connections and joins every thread the manager started.
        """
        with self._disconnect_lock:
            if self._disconnected:
                return
            self._disconnected = True
            self._state.request_stop()
            # From inside ``execute`` (a claim loop), waiting for the tasks would wait for itself.
            self._state.close_after_tasks(
                self._shutdown_timeout, wait=not self._runner.runs_on_claim_loop()
            )
            self._registry.leave_rooms()
            worker_id = self._registry.worker_id
            if worker_id is not None:
                # The deletion also ends the claim long-polls in flight on the server.
                self._supervisor.delete_worker(worker_id)
            if self._link is not None:
                self._link.close(join_timeout=self._request_timeout)
            self._runner.join(self._request_timeout)
            self._supervisor.join(self._request_timeout)
            self.api.close()
            logger.info("Worker %s disconnected", worker_id)


def _bearer_of(headers: Mapping[str, str]) -> str | None:
    for key, value in headers.items():
        if key.lower() == "authorization" and value.lower().startswith("bearer "):
            return value[7:]
    return None
