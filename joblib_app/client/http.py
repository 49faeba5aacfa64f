"""HTTP access to the job server: the one place where the SDK makes REST calls.

Every request goes through :meth:`ApiClient.request` (one httpx client, retries, problem+json
errors turned into typed :class:`~joblib_app.client.errors.ApiError` subclasses), which also
keeps the :class:`OutageTracker` up to date so the supervisor can tell how long the server
has been unreachable. The named methods below it are the calls of the contract the SDK uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from joblib_app.client.errors import ApiError, ServerUnreachable, api_error, as_worker_gone
from joblib_app.client.models import JobRegistration, ProviderRegistration
from joblib_app.domain import prefer
from joblib_app.domain.statuses import is_terminal

logger = logging.getLogger(__name__)

# Methods whose repetition cannot create a second effect on the server.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Errors raised before a single byte of the request reached the server: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class OutageTracker:
    """Measures how long the server has failed to answer, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None

    def record_failure(self) -> None:
        """Note a failed attempt; the outage starts at the first one."""
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()

    def record_success(self) -> None:
        """Note an answer from the server: the outage, if any, is over."""
        with self._lock:
            self._since = None

    def elapsed(self) -> float:
        """Seconds since the outage began, 0 when the server is answering."""
        with self._lock:
            return 0.0 if self._since is None else time.monotonic() - self._since

    def exceeded(self, limit: float | None) -> bool:
        """Whether the ongoing outage is longer than ``limit`` (never, when ``limit`` is None)."""
        return limit is not None and self.elapsed() > limit


def backoff_delays(base: float = 0.1, cap: float = 2.0) -> Iterator[float]:
    """Exponential delays ``base, 2*base, ...`` capped at ``cap``, forever."""
    delay = base
    while True:
        yield delay
        delay = min(delay * 2, cap)


class ApiClient:
    """A thin, thread-safe wrapper around :class:`httpx.Client` for one mounted job server.

    ``base_url`` is where the sub-app is mounted, e.g. ``http://host:8000/v1/joblib``;
    paths given to :meth:`request` are relative to it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.outage = OutageTracker()
        # Set when the owner shuts down, so retry loops stop waiting at once.
        self._stop = stop or threading.Event()
        self._http = httpx.Client(
            headers=self.headers,
            timeout=timeout,
            transport=transport,
            # Long-polls and provider uploads run beside each other: keep connections for both.
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        )

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (relative to the mount point)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retry_for: float | None = 0.0,
    ) -> httpx.Response:
        """Send one request and return the successful response.

        Transport failures are retried with exponential backoff for ``retry_for`` seconds
        (``None``: until the owner stops; ``0``: no retry). Requests that may have reached the
        server are only retried for idempotent methods, so a claim or a submit is never
        duplicated. Raises :class:`ApiError` for 4xx/5xx answers and
        :class:`ServerUnreachable` when no answer came.
        """
        method = method.upper()
        deadline = None if retry_for is None else time.monotonic() + retry_for
        delays = backoff_delays()
        while True:
            try:
                response = self._http.request(
                    method,
                    self.url(path),
                    json=json,
                    content=content,
                    headers=headers,
                    params=params,
                    timeout=self.timeout if timeout is None else timeout,
                )
            except httpx.TransportError as exc:
                self.outage.record_failure()
                retryable = isinstance(exc, _NOT_SENT) or method in _IDEMPOTENT
                delay = next(delays)
                out_of_time = deadline is not None and time.monotonic() + delay > deadline
                if not retryable or out_of_time or self._stop.is_set():
                    raise ServerUnreachable(f"{method} {path}: {exc!r}") from exc
                logger.debug("%s %s failed (%r); retrying in %.2fs", method, path, exc, delay)
                if self._stop.wait(delay):
                    raise ServerUnreachable(f"{method} {path}: stopped while retrying") from exc
                continue
            self.outage.record_success()
            if (
                response.status_code == 503
                and method in _IDEMPOTENT
                and "retry-after" in response.headers
            ):
                # The server lost its database connection (or is starting): it says when to
                # come back. Only idempotent requests: a claim or a submit may have happened.
                delay = _retry_after(response.headers["retry-after"])
                if (
                    deadline is None or time.monotonic() + delay <= deadline
                ) and not self._stop.wait(delay):
                    logger.debug("%s %s answered 503; retrying in %.2fs", method, path, delay)
                    continue
            if response.status_code >= 400:
                raise api_error(response.status_code, _problem_of(response))
            return response

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- workers ---------------------------------------------------------------------------

    def create_worker(self, *, retry_for: float | None) -> str:
        """``POST /workers``: a new worker of the authenticated principal; returns its id."""
        return str(self.request("POST", "/workers", retry_for=retry_for).json()["id"])

    def heartbeat(self, worker_id: str, *, retry_for: float | None = 0.0) -> None:
        """``PATCH /workers/{id}``; raises :class:`WorkerGone` if the worker is not ours."""
        try:
            self.request("PATCH", f"/workers/{worker_id}", retry_for=retry_for)
        except ApiError as exc:
            gone = as_worker_gone(exc)
            if gone is exc:
                raise
            raise gone from exc

    def delete_worker(self, worker_id: str) -> None:
        """``DELETE /workers/{id}`` (the server then cleans up what only it served)."""
        self.request("DELETE", f"/workers/{worker_id}", retry_for=0)

    # -- jobs and providers --------------------------------------------------------------

    def put_job(
        self, registration: JobRegistration, worker_id: str, *, retry_for: float | None
    ) -> None:
        """``PUT /rooms/{room}/jobs``: register (or re-link) a job for ``worker_id``."""
        self.request(
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

    def put_provider(
        self, registration: ProviderRegistration, worker_id: str, *, retry_for: float | None
    ) -> str:
        """``PUT /rooms/{room}/providers``: register a provider; returns its id."""
        response = self.request(
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

    def delete_provider(self, provider_id: str) -> None:
        """``DELETE /providers/{id}``."""
        self.request("DELETE", f"/providers/{provider_id}", retry_for=5.0)

    def upload_provider_result(
        self, provider_id: str, request_id: str, body: bytes, content_type: str
    ) -> None:
        """``POST /providers/{id}/results``: the answer to one ``provider_request``."""
        self.request(
            "POST",
            f"/providers/{provider_id}/results",
            content=body,
            headers={"X-Request-Hash": request_id, "Content-Type": content_type},
            retry_for=0,
        )

    # -- tasks -----------------------------------------------------------------------------

    def submit(self, room_id: str, job_full_name: str, payload: dict[str, Any]) -> str:
        """``POST /rooms/{room}/tasks/{job}``; returns the new task's id."""
        response = self.request(
            "POST",
            f"/rooms/{room_id}/tasks/{job_full_name}",
            json={"payload": payload},
            retry_for=5.0,
        )
        return str(response.json()["id"])

    def get_task(self, task_id: str, *, wait: float | None = None) -> dict[str, Any]:
        """``GET /tasks/{id}``; with ``wait``, long-poll until the task is terminal."""
        response = self.request(
            "GET",
            f"/tasks/{task_id}",
            headers=prefer_wait_header(wait),
            timeout=self.timeout + (wait or 0),
            retry_for=5.0,
        )
        result: dict[str, Any] = response.json()
        return result

    def wait_for_task(
        self, task_id: str, timeout: float | None, *, poll_wait: float
    ) -> dict[str, Any]:
        """Long-poll ``GET /tasks/{id}`` until the task is terminal; :class:`TimeoutError`
        after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = poll_wait
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"task {task_id} not finished after {timeout}s")
            task = self.get_task(task_id, wait=max(wait, 0.001))
            if is_terminal(task["status"]):
                return task

    def update_task(self, task_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /tasks/{id}``: a status change or progress report; returns the task.

        The same update twice is harmless (the server answers 200), so a lost answer is
        retried.
        """
        response = self.request("PATCH", f"/tasks/{task_id}", json=dict(body), retry_for=10.0)
        result: dict[str, Any] = response.json()
        return result

    def claim(self, worker_id: str, *, wait: float) -> ClaimAnswer:
        """``POST /tasks/claim``; raises :class:`WorkerGone` if the worker is not ours.

        Never retried: a claim that reached the server may have taken a task.
        """
        try:
            response = self.request(
                "POST",
                "/tasks/claim",
                json={"worker_id": worker_id},
                headers=prefer_wait_header(wait),
                timeout=self.timeout + wait,
                retry_for=0,
            )
        except ApiError as exc:
            gone = as_worker_gone(exc)
            if gone is exc:
                raise
            raise gone from exc
        task = response.json().get("task")
        return ClaimAnswer(task, "preference-applied" in response.headers)


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    """The answer to a claim: the task (or None), and whether the server honoured the wait."""

    task: dict[str, Any] | None
    waited: bool


def _retry_after(value: str) -> float:
    """``Retry-After`` in seconds (delta form), within 0.1..10 s; 1 s if unreadable."""
    try:
        return min(max(float(value), 0.1), 10.0)
    except ValueError:
        return 1.0


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    """The RFC 9457 body of an error answer, or a stand-in built from its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"status": response.status_code, "detail": response.text[:500]}


def prefer_wait_header(seconds: float | None) -> dict[str, str] | None:
    """The ``Prefer: wait=N`` header asking the server to long-poll; ``None`` for no wait."""
    if not seconds or seconds <= 0:
        return None
    return {"Prefer": prefer.prefer_wait(seconds)}
