"""An in-process result backend: for a single server process and for users' own tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from joblib_app.providers.backend import ResultTooLargeError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1_048_576
# How often expired entries are freed, whether or not anything is read or written.
SWEEP_SECONDS = 1.0


class InMemoryResultBackend:
    """A :class:`~joblib_app.providers.backend.ResultBackend` kept in a dict.

    Holds at most ``max_bytes`` of values: a store that would exceed it first drops
    expired entries, then the oldest writes, until the new value fits; a value larger
    than ``max_bytes`` on its own raises :class:`ResultTooLargeError`. Expired entries are
    freed within ``sweep_seconds`` once :meth:`start` ran (and are never returned). Expiry
    uses the monotonic clock. Waiters are woken only within this process and event loop.
    """

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, *, sweep_seconds: float = SWEEP_SECONDS
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._sweep_seconds = sweep_seconds
        # Insertion order is write order (a rewrite moves a key to the end): eviction
        # takes from the front.
        self._values: dict[str, tuple[bytes, float]] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._bytes = 0
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def stored_bytes(self) -> int:
        """Bytes of the values held now (expired ones not yet freed included)."""
        return self._bytes

    async def start(self) -> None:
        """Start freeing expired entries every ``sweep_seconds``."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="joblib-result-cache-sweep")

    async def close(self) -> None:
        """Stop the sweeper and drop every value."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self._values.clear()
        self._bytes = 0

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_seconds)
            self._drop_expired(time.monotonic())

    async def store(self, key: str, data: bytes, ttl: int) -> None:
        """Store `data` under `key` for `ttl` seconds."""
        self._put(key, bytes(data), ttl)

    async def get(self, key: str) -> bytes | None:
        """The live value under `key`, or None."""
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._remove(key)
            return None
        return entry[0]

    async def delete(self, key: str) -> None:
        """Remove `key` if present."""
        self._remove(key)

    async def acquire_inflight(self, key: str, ttl: int) -> bool:
        """Take `key` for `ttl` seconds unless a live value holds it."""
        if await self.get(key) is not None:
            return False
        self._put(key, b"1", ttl)
        return True

    async def release_inflight(self, key: str) -> None:
        """Release the in-flight lock `key`."""
        await self.delete(key)

    async def wait_for_key(self, key: str, timeout: float) -> bytes | None:  # noqa: ASYNC109
        """Wait up to `timeout` seconds for a value under `key` (see the protocol)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        woken = asyncio.Event()
        self._waiters.setdefault(key, set()).add(woken)
        try:
            while (value := await self.get(key)) is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        await woken.wait()
                except TimeoutError:
                    return await self.get(key)
                woken.clear()
            return value
        finally:
            waiters = self._waiters[key]
            waiters.discard(woken)
            if not waiters:
                del self._waiters[key]

    async def notify_key(self, key: str) -> None:
        """Wake every waiter of `key`."""
        for woken in self._waiters.get(key, ()):
            woken.set()

    def _put(self, key: str, data: bytes, ttl: int) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl}")
        if len(data) > self.max_bytes:
            raise ResultTooLargeError(
                f"a value of {len(data)} bytes exceeds the cache's {self.max_bytes} bytes"
            )
        now = time.monotonic()
        self._remove(key)
        if self._bytes + len(data) > self.max_bytes:
            self._drop_expired(now)
        evicted = 0
        while self._bytes + len(data) > self.max_bytes:
            self._remove(next(iter(self._values)))
            evicted += 1
        if evicted:
            logger.info("Result cache full: evicted the %d oldest value(s)", evicted)
        self._values[key] = (data, now + ttl)
        self._bytes += len(data)

    def _remove(self, key: str) -> None:
        entry = self._values.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, (_, expires) in self._values.items() if expires <= now]:
            self._remove(key)
