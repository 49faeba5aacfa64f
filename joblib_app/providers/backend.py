"""The result backend protocol: where provider read results are cached and reads coalesce.

The server builds the keys (``provider-result:{full_name}:{hash}`` for a cached result,
``provider-inflight:{full_name}:{hash}`` for the in-flight lock); a backend is a plain
key/value store with expiry plus a way to wake the readers waiting for a key.

Implementations: :class:`~joblib_app.providers.memory.InMemoryResultBackend` (one process,
good for tests) and :class:`~joblib_app.providers.redis_backend.RedisResultBackend`.
Both also have ``async start()`` and ``async close()``, which the server calls if present.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class ResultBackendUnavailable(Exception):
    """The backend cannot be reached (e.g. Redis down). The server maps it to 503."""


class ResultTooLargeError(Exception):
    """A value larger than the backend holds in total. The server maps it to 413."""


@runtime_checkable
class ResultBackend(Protocol):
    """Key/value storage with expiry, an in-flight lock, and key waiters.

    TTL semantics: ``ttl`` is a whole number of seconds greater than zero. A value stored with
    a TTL exists until that many seconds have passed (or until it is deleted or overwritten,
    which restarts the TTL); after that it is absent for every operation: ``get`` returns
    None and ``acquire_inflight`` can take the key again. Expiry may be lazy, but an expired
    value is never returned. An in-flight lock's TTL bounds how long a crashed or silent
    taker blocks others from taking the lock again.
    """

    async def store(self, key: str, data: bytes, ttl: int) -> None:
        """Store `data` under `key`, replacing any value; it expires after `ttl` seconds."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None if absent or expired."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; no error if it is absent."""
        ...

    async def acquire_inflight(self, key: str, ttl: int) -> bool:
        """Set `key` if absent, expiring after `ttl` seconds; True if this caller took it."""
        ...

    async def release_inflight(self, key: str) -> None:
        """Release a lock taken with :meth:`acquire_inflight` (deletes `key`)."""
        ...

    async def wait_for_key(self, key: str, timeout: float) -> bytes | None:  # noqa: ASYNC109
        """Wait up to `timeout` seconds for a value under `key`.

        Subscribes first, then re-checks the stored value (returned at once if present), then
        waits for :meth:`notify_key`; after each wake the value is re-read and returned if
        present. None when `timeout` passes without a value.
        """
        ...

    async def notify_key(self, key: str) -> None:
        """Wake every waiter of `key`, in every process sharing the backend."""
        ...
