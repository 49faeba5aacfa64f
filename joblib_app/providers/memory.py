"""An in-process result backend: for a single server process and for users' own tests."""

from __future__ import annotations

import asyncio
import time

# Expired entries are dropped when read; a full sweep every this many writes keeps keys that
# are never read again from piling up.
_SWEEP_EVERY = 1000


class InMemoryResultBackend:
    """A :class:`~joblib_app.providers.backend.ResultBackend` kept in a dict.

    Expiry uses the monotonic clock and is lazy. Waiters are woken only within this process
    and event loop.
    """

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float]] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._writes = 0

    async def start(self) -> None:
        """Nothing to start; present for the common lifecycle."""

    async def close(self) -> None:
        """Drop every value."""
        self._values.clear()

    async def store(self, key: str, data: bytes, ttl: int) -> None:
        """Store `data` under `key` for `ttl` seconds."""
        self._put(key, bytes(data), ttl)

    async def get(self, key: str) -> bytes | None:
        """The live value under `key`, or None."""
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._values[key]
            return None
        return entry[0]

    async def delete(self, key: str) -> None:
        """Remove `key` if present."""
        self._values.pop(key, None)

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
        now = time.monotonic()
        self._values[key] = (data, now + ttl)
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
