"""HTTP access to the job server: one httpx client, retries, problem+json errors.

Every request goes through :meth:`ApiClient.request`, which also keeps the
:class:`OutageTracker` up to date so the manager can tell how long the server has been
unreachable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from joblib_app.client.errors import ApiError, ServerUnreachable

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


def backoff_delays(base: float = 0.1, cap: float = 2.0) -> Any:
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
                raise ApiError(response.status_code, _problem_of(response))
            return response

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


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
