"""Helpers of the provider acceptance tests: servers, a Socket.IO provider, a frontend, Redis.

A :class:`FakeProvider` plays the provider side of the contract with a real python-socketio
``AsyncClient``: it connects with its owner's token, joins ``providers:{full_name}`` with
``join_provider_room`` and answers each ``provider_request`` by uploading to
``POST /providers/{id}/results`` with ``X-Request-Hash`` set to the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import socketio

from tests.support.api import BaseApi, auth
from tests.support.server import ServerProcess, free_port
from tests.support.services import delete_redis_prefix

ADMIN = "admin"
ALICE = "user:alice"
BOB = "user:bob"
PROBLEM = "application/problem+json"
BACKENDS = ("memory", "redis")
# Short waits keep the timeout tests fast: the default wait and the cap are both small.
DEFAULT_WAIT = 0.5
MAX_WAIT = 1.5
# Allowance for a loaded machine when asserting how long a wait took.
SLACK = 3.0
ALLOWED_CATEGORIES = ("files", "data", "modifiers")

Answer = Callable[[dict[str, Any]], bytes | Awaitable[bytes]]


def request_hash(params: Mapping[str, str]) -> tuple[str, str]:
    """The contract's canonical JSON of read parameters and its SHA-256 hex digest."""
    canonical = json.dumps(dict(params), sort_keys=True, separators=(",", ":"))
    return canonical, hashlib.sha256(canonical.encode()).hexdigest()


def new_room() -> str:
    return f"r{uuid.uuid4().hex[:12]}"


def unique(prefix: str = "p") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def assert_problem(response: httpx.Response, status: int, kind: str | None = None) -> dict:
    """Check an RFC 9457 answer and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    if kind is not None:
        assert body["type"] == f"/v1/problems/{kind}", body
    return body


async def ask_pending(
    api: BaseApi[Any], room: str, full_name: str, params: Mapping[str, str]
) -> str:
    """Read ``params`` once with no wait (``504``: nobody answers), so that the server
    expects an upload for that request; its request hash."""
    response = await api.request(
        "GET", f"/rooms/{room}/providers/{full_name}", params=params, headers={"Prefer": "wait=0"}
    )
    assert_problem(response, 504, "provider-timeout")
    return request_hash(params)[1]


async def wait_until(
    condition: Callable[[], bool], within: float = 10.0, what: str = "condition"
) -> None:
    """Poll a cheap local condition until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


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
def serve(
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
    if redis_url is not None:
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


class Api(BaseApi[ProviderServer]):
    """The REST client of the provider tests."""

    async def put_provider(
        self,
        room: str,
        name: str,
        token: str = ALICE,
        *,
        category: str = "files",
        content_type: str = "application/json",
        schema: dict | None = None,
        worker_id: str | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "category": category,
            "name": name,
            "schema": schema or {},
            "content_type": content_type,
        }
        if worker_id is not None:
            body["worker_id"] = worker_id
        return await self.request("PUT", f"/rooms/{room}/providers", token, json=body)

    async def register(self, room: str, name: str, token: str = ALICE, **kwargs: Any) -> dict:
        response = await self.put_provider(room, name, token, **kwargs)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def read(
        self,
        room: str,
        full_name: str,
        params: Mapping[str, str] | None = None,
        token: str = ALICE,
        *,
        wait: float | None = None,
    ) -> httpx.Response:
        headers = {"Prefer": f"wait={wait:g}"} if wait is not None else None
        return await self.request(
            "GET", f"/rooms/{room}/providers/{full_name}", token, params=params, headers=headers
        )


def socketio_path(server: ProviderServer) -> str:
    return server.process.mount.strip("/") + "/socket.io"


class FakeProvider:
    """A provider process stand-in: a Socket.IO client that answers ``provider_request``.

    ``answer(request)`` returns the bytes to upload (``None`` answer: never upload, for
    timeouts). ``delay`` simulates a slow provider. Every received request is kept in
    :attr:`requests`, in arrival order.
    """

    def __init__(
        self,
        server: ProviderServer,
        provider: dict,
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

    async def wait_for_requests(self, count: int, within: float = 10.0) -> list[dict]:
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


class Frontend:
    """A Socket.IO client following ``room:{room_id}``; records every event it receives."""

    def __init__(self, server: ProviderServer, room: str, token: str = ALICE) -> None:
        self.server = server
        self.room = room
        self.token = token
        self.events: list[tuple[str, Any]] = []
        self.sio = socketio.AsyncClient(reconnection=False)

        async def record(event: str, data: Any = None) -> None:
            self.events.append((event, data))

        self.sio.on("*", record)

    async def __aenter__(self) -> Frontend:
        await self.sio.connect(
            self.server.origin,
            socketio_path=socketio_path(self.server),
            auth={"token": self.token},
            transports=["websocket"],
            wait_timeout=10,
        )
        ack = await self.sio.call("join_room", {"room_id": self.room}, timeout=10)
        assert ack == {"status": "ok"}, ack
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sio.disconnect()

    def named(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(self, event: str, count: int = 1, within: float = 10.0) -> list[Any]:
        await wait_until(lambda: len(self.named(event)) >= count, within, f"{count} {event}")
        return self.named(event)


class RedisServer:
    """A throwaway ``redis-server`` on a port of its own, to stop and restart in a test."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """Stop at once (SIGKILL): clients see the connection drop, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
