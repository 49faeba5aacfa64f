"""Helpers of the REST acceptance tests: databases, servers and a small HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.server import ServerProcess
from tests.support.services import require_postgres

DATABASES = ("sqlite", "postgres")
ADMIN = "admin"
ALICE = "user:alice"
BOB = "user:bob"
PROBLEM = "application/problem+json"
# Small, so that the 413 test needs no big upload; every other body here is far below it.
BODY_LIMIT = 4096


async def _create_database(admin_url: str, name: str) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()


async def _drop_database(admin_url: str, name: str) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for a whole module, dropped afterwards.

    Synchronous (its own event loop) so that module-scoped fixtures can use it.
    """
    admin_url = require_postgres()
    name = f"joblib_accept_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(admin_url, name))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_drop_database(admin_url, name))


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A database URL of ``kind`` (``sqlite`` or ``postgres``), removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'joblib.db'}"
        return
    with postgres_database() as url:
        yield url


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "JOBLIB_TEST_DATABASE_URL": database_url,
        "ZNDRAW_JOBLIB_MAX_REQUEST_BODY_BYTES": str(BODY_LIMIT),
        **extra,
    }


@contextlib.contextmanager
def serve(
    kind: str, workdir: Path, *, mount: str = "/v1/joblib", **extra_env: str
) -> Iterator[ServerProcess]:
    """A uvicorn server of the test host on a fresh database of ``kind``."""
    with (
        database(kind, workdir) as url,
        ServerProcess(
            server_env(url, **extra_env), mount=mount, log_path=workdir / "server.log"
        ) as server,
    ):
        yield server


def new_room() -> str:
    return f"r{uuid.uuid4().hex[:12]}"


def unique(prefix: str = "j") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def auth(token: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``extra`` headers plus a bearer ``token``; ``None`` sends no Authorization at all."""
    headers = dict(extra or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class Served(Protocol):
    """All :class:`BaseApi` needs of a server: the URL the joblib app is mounted at."""

    @property
    def base(self) -> str: ...


# Generic so that each suite's tests see their own server type (and its extras) on ``server``.
ServerT = TypeVar("ServerT", bound=Served)


class BaseApi(Generic[ServerT]):
    """A thin async HTTP client bound to one server; each call's ``token`` picks the caller."""

    def __init__(self, client: httpx.AsyncClient, server: ServerT) -> None:
        self.client = client
        self.server = server
        self.base = server.base

    def headers(self, token: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return auth(token, extra)

    async def request(
        self,
        method: str,
        path: str,
        token: str | None = ALICE,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        return await self.client.request(
            method,
            self.base + path,
            json=json,
            params=params,
            content=content,
            headers=self.headers(token, headers),
        )

    async def create_worker(self, token: str = ALICE) -> str:
        response = await self.request("POST", "/workers", token)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def upload(
        self, provider_id: str, digest: str, data: bytes, token: str = ALICE
    ) -> httpx.Response:
        """Upload ``data`` as a provider's answer to the read with request hash ``digest``."""
        return await self.request(
            "POST",
            f"/providers/{provider_id}/results",
            token,
            content=data,
            headers={"X-Request-Hash": digest},
        )


class Api(BaseApi[ServerProcess]):
    """The REST client of the job and task tests."""

    async def register(
        self,
        room: str,
        name: str,
        token: str = ALICE,
        *,
        category: str = "modifiers",
        schema: dict | None = None,
        worker_id: str | None = None,
    ) -> dict:
        body: dict[str, Any] = {"category": category, "name": name, "schema": schema or {}}
        if worker_id is not None:
            body["worker_id"] = worker_id
        response = await self.request("PUT", f"/rooms/{room}/jobs", token, json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def submit(
        self, room: str, job: str, token: str = ALICE, payload: dict | None = None
    ) -> dict:
        response = await self.request(
            "POST", f"/rooms/{room}/tasks/{job}", token, json={"payload": payload or {}}
        )
        assert response.status_code == 202, response.text
        return response.json()

    async def claim(self, worker_id: str, token: str = ALICE) -> dict | None:
        response = await self.request("POST", "/tasks/claim", token, json={"worker_id": worker_id})
        assert response.status_code == 200, response.text
        return response.json()["task"]

    async def patch_task(
        self, task_id: str, status: str, token: str = ALICE, error: str | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"status": status}
        if error is not None:
            body["error"] = error
        return await self.request("PATCH", f"/tasks/{task_id}", token, json=body)

    async def task(self, task_id: str, token: str = ALICE) -> dict:
        response = await self.request("GET", f"/tasks/{task_id}", token)
        assert response.status_code == 200, response.text
        return response.json()


def assert_problem(response: httpx.Response, status: int, kind: str | None = None) -> dict:
    """Check an RFC 9457 answer and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    assert body["type"].startswith("/v1/problems/")
    if kind is not None:
        assert body["type"] == f"/v1/problems/{kind}", body
    return body
