"""The provider acceptance tests' servers and a Socket.IO provider stand-in.

A :class:`FakeProvider` plays the provider side of the contract with a real python-socketio
``AsyncClient``: it connects with its owner's token, joins ``providers:{full_name}`` with
``join_provider_room`` and answers each ``provider_request`` by uploading to
``POST /providers/{id}/results`` with ``X-Request-Hash`` set to the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import socketio

from tests.support.names import ALICE, auth
from tests.support.realtime import socketio_path
from tests.support.server import ServerProcess
from tests.support.services import delete_redis_prefix
from tests.support.waiting import wait_until

BACKENDS = ("memory", "redis")
# Short waits keep the timeout tests fast: the default wait and the cap are both small.
DEFAULT_WAIT = 0.5
MAX_WAIT = 1.5
# Allowance for a loaded machine when asserting how long a wait took.
SLACK = 3.0
ALLOWED_CATEGORIES = ("files", "data", "modifiers")

Answer = Callable[[dict[str, Any]], bytes | Awaitable[bytes]]


@dataclass
class ProviderServer:
    """A test host under uvicorn plus what the tests need to know about its backend."""

    process: ServerProcess
    backend: str
    redis_url: str | None
    redis_prefix: str | None
    rooms_cleaned_log: Path

    @property
    def base(self) -> str:
        return self.process.base

    @property
    def origin(self) -> str:
        return self.process.origin

    @property
    def mount(self) -> str:
        return self.process.mount

    def rooms_cleaned(self) -> list[str]:
        """Room ids the host's ``on_rooms_cleaned`` hook was given so far."""
        if not self.rooms_cleaned_log.exists():
            return []
        return self.rooms_cleaned_log.read_text(encoding="utf-8").split()

    def redis_keys(self, pattern: str) -> list[bytes]:
        """Keys under this server's Redis prefix matching ``pattern`` (Redis backend only)."""
        assert self.redis_url is not None and self.redis_prefix is not None
        client = redis.Redis.from_url(self.redis_url)
        try:
            return list(client.scan_iter(match=self.redis_prefix + pattern))
        finally:
            client.close()


@contextlib.contextmanager
def serve_providers(
    workdir: Path, *, redis_url: str | None = None, **settings: str
) -> Iterator[ProviderServer]:
    """A uvicorn server on a fresh SQLite file; with ``redis_url`` on the Redis backend.

    ``settings`` are extra environment variables (``ZNDRAW_JOBLIB_*``).
    """
    prefix = f"joblibtest:{uuid.uuid4().hex[:12]}:" if redis_url else None
    rooms_log = workdir / "rooms_cleaned.log"
    env = {
        "JOBLIB_TEST_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'joblib.db'}",
        "JOBLIB_TEST_ROOMS_CLEANED_LOG": str(rooms_log),
        "ZNDRAW_JOBLIB_PROVIDER_LONG_POLL_DEFAULT_SECONDS": str(DEFAULT_WAIT),
        "ZNDRAW_JOBLIB_PROVIDER_LONG_POLL_MAX_SECONDS": str(MAX_WAIT),
        "ZNDRAW_JOBLIB_ALLOWED_PROVIDER_CATEGORIES": json.dumps(list(ALLOWED_CATEGORIES)),
        # Providers here send no heartbeats: the sweeper must not remove their workers
        # while a slow (loaded) run is still using them.
        "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": "3600",
        # A dropped connection's providers go after the reconnect grace: short here.
        "ZNDRAW_JOBLIB_WORKER_RECONNECT_GRACE_SECONDS": "0.2",
        **settings,
    }
    if redis_url is not None and prefix is not None:
        env["JOBLIB_TEST_REDIS_URL"] = redis_url
        env["JOBLIB_TEST_REDIS_PREFIX"] = prefix
    process = ServerProcess(env, log_path=workdir / "server.log")
    try:
        with process:
            yield ProviderServer(
                process, "redis" if redis_url else "memory", redis_url, prefix, rooms_log
            )
    finally:
        if redis_url is not None and prefix is not None:
            with contextlib.suppress(redis.RedisError):
                delete_redis_prefix(redis_url, prefix)


class FakeProvider:
    """A provider process stand-in: a Socket.IO client that answers ``provider_request``.

    ``answer(request)`` returns the bytes to upload (``None`` answer: never upload, for
    timeouts). ``delay`` simulates a slow provider. Every received request is kept in
    :attr:`requests`, in arrival order.
    """

    def __init__(
        self,
        server: ProviderServer,
        provider: dict[str, Any],
        *,
        token: str = ALICE,
        answer: Answer | None = None,
        delay: float = 0.0,
    ) -> None:
        self.server = server
        self.provider = provider
        self.token = token
        self.answer = answer
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.uploads: list[httpx.Response] = []
        # Monotonic time each upload was started, in upload order.
        self.upload_started: list[float] = []
        self.sio = socketio.AsyncClient(reconnection=False)
        self.http = httpx.AsyncClient(timeout=30)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sio.on("provider_request", self._on_request)

    async def start(self) -> FakeProvider:
        await self.sio.connect(
            self.server.origin,
            socketio_path=socketio_path(self.server),
            auth={"token": self.token},
            transports=["websocket"],
            wait_timeout=10,
        )
        ack = await self.sio.call(
            "join_provider_room",
            {
                "provider_name": self.provider["full_name"],
                "worker_id": self.provider["worker_id"],
            },
            timeout=10,
        )
        assert ack == {"status": "ok"}, ack
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self.sio.disconnect()
        await self.http.aclose()

    async def __aenter__(self) -> FakeProvider:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for_requests(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        await wait_until(
            lambda: len(self.requests) >= count, within, f"{count} provider_request(s)"
        )
        return self.requests

    async def wait_for_uploads(self, count: int, within: float = 10.0) -> list[httpx.Response]:
        await wait_until(lambda: len(self.uploads) >= count, within, f"{count} upload(s)")
        return self.uploads

    async def _on_request(self, data: dict[str, Any]) -> None:
        self.requests.append(data)
        if self.answer is None:
            return
        # Uploading from the handler would hold up the client's event loop for other events.
        task = asyncio.create_task(self._answer(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: dict[str, Any]) -> None:
        assert self.answer is not None
        if self.delay:
            await asyncio.sleep(self.delay)
        data = self.answer(request)
        if not isinstance(data, bytes):
            data = await data
        self.upload_started.append(time.monotonic())
        response = await self.http.post(
            f"{self.server.base}/providers/{self.provider['id']}/results",
            content=data,
            headers=auth(self.token, {"X-Request-Hash": request["request_id"]}),
        )
        self.uploads.append(response)
