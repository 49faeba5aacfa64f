"""HTTP clients of the suite: the ``Api`` wrapper and one-call helpers on a plain client.

Both work on anything :class:`Served` (a uvicorn :class:`~tests.support.server.ServerProcess`,
a provider server, or an in-process app behind httpx's ``ASGITransport``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, Protocol

import httpx
from typing_extensions import TypeVar

from tests.support.names import ALICE, assert_problem, auth, request_hash
from tests.support.server import ServerProcess


class Served(Protocol):
    """All :class:`Api` needs of a server: the URL the joblib app is mounted at."""

    @property
    def base(self) -> str: ...


# Generic so that each suite's tests see their own server type (and its extras) on ``server``;
# a bare ``Api`` is the client of a uvicorn server.
ServerT = TypeVar("ServerT", bound=Served, default=ServerProcess)


class Api(Generic[ServerT]):
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
        return str(response.json()["id"])

    # Jobs and tasks.

    async def register(
        self,
        room: str,
        name: str,
        token: str = ALICE,
        *,
        category: str = "modifiers",
        schema: dict[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """Register job ``{category}:{name}`` in ``room``; the job."""
        body: dict[str, Any] = {"category": category, "name": name, "schema": schema or {}}
        if worker_id is not None:
            body["worker_id"] = worker_id
        response = await self.request("PUT", f"/rooms/{room}/jobs", token, json=body)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    async def submit(
        self, room: str, job: str, token: str = ALICE, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = await self.request(
            "POST", f"/rooms/{room}/tasks/{job}", token, json={"payload": payload or {}}
        )
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def claim(self, worker_id: str, token: str = ALICE) -> dict[str, Any] | None:
        response = await self.request("POST", "/tasks/claim", token, json={"worker_id": worker_id})
        assert response.status_code == 200, response.text
        task: dict[str, Any] | None = response.json()["task"]
        return task

    async def claim_one(self, worker_id: str, token: str = ALICE) -> dict[str, Any]:
        """Claim once where a task is due to be claimed; that task (``None`` fails the test)."""
        task = await self.claim(worker_id, token)
        assert task is not None, "no task was claimed"
        return task

    async def patch_task(
        self, task_id: str, status: str, token: str = ALICE, error: str | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"status": status}
        if error is not None:
            body["error"] = error
        return await self.request("PATCH", f"/tasks/{task_id}", token, json=body)

    async def task(self, task_id: str, token: str = ALICE) -> dict[str, Any]:
        response = await self.request("GET", f"/tasks/{task_id}", token)
        assert response.status_code == 200, response.text
        return dict(response.json())

    # Providers.

    async def put_provider(
        self,
        room: str,
        name: str,
        token: str | None = ALICE,
        *,
        category: str = "files",
        content_type: str = "application/json",
        schema: dict[str, Any] | None = None,
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

    async def register_provider(
        self, room: str, name: str, token: str = ALICE, **kwargs: Any
    ) -> dict[str, Any]:
        """Register provider ``{category}:{name}`` in ``room``; the provider."""
        response = await self.put_provider(room, name, token, **kwargs)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    async def read(
        self,
        room: str,
        full_name: str,
        params: Mapping[str, str] | None = None,
        token: str = ALICE,
        *,
        wait: float | None = None,
    ) -> httpx.Response:
        """Read a provider, with ``Prefer: wait`` when ``wait`` is given."""
        headers = {"Prefer": f"wait={wait:g}"} if wait is not None else None
        return await self.request(
            "GET", f"/rooms/{room}/providers/{full_name}", token, params=params, headers=headers
        )

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


async def ask_pending(api: Api[Any], room: str, full_name: str, params: Mapping[str, str]) -> str:
    """Read ``params`` once with no wait (``504``: nobody answers), so that the server
    expects an upload for that request; its request hash."""
    response = await api.request(
        "GET", f"/rooms/{room}/providers/{full_name}", params=params, headers={"Prefer": "wait=0"}
    )
    assert_problem(response, 504, "provider-timeout")
    return request_hash(params)[1]


def http(where: Served | str, token: str | None, seconds: float = 30) -> httpx.AsyncClient:
    """An HTTP client on a server's joblib mount (or a base URL), as ``token`` (if any)."""
    base = where if isinstance(where, str) else where.base
    return httpx.AsyncClient(base_url=base, headers=auth(token), timeout=seconds)


async def register_job(
    api: httpx.AsyncClient, room_id: str, name: str, worker_id: str | None = None
) -> dict[str, Any]:
    """Register ``modifiers:{name}`` in ``room_id`` (a new worker unless one is given)."""
    body: dict[str, Any] = {"category": "modifiers", "name": name, "schema": {"x": 1}}
    if worker_id is not None:
        body["worker_id"] = worker_id
    response = await api.put(f"/rooms/{room_id}/jobs", json=body)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


async def submit(api: httpx.AsyncClient, room_id: str, job_full_name: str) -> dict[str, Any]:
    """Submit a task with an empty payload; the 202 body."""
    response = await api.post(f"/rooms/{room_id}/tasks/{job_full_name}", json={"payload": {}})
    assert response.status_code == 202, response.text
    return dict(response.json())


async def claim(api: httpx.AsyncClient, worker_id: str, **headers: str) -> dict[str, Any] | None:
    """Claim once for ``worker_id``; the task or None."""
    response = await api.post("/tasks/claim", json={"worker_id": worker_id}, headers=headers)
    assert response.status_code == 200, response.text
    task: dict[str, Any] | None = response.json()["task"]
    return task


async def claim_one(api: httpx.AsyncClient, worker_id: str, **headers: str) -> dict[str, Any]:
    """Claim once where a task is due to be claimed; that task (``None`` fails the test)."""
    task = await claim(api, worker_id, **headers)
    assert task is not None, "no task was claimed"
    return task


async def set_status(api: httpx.AsyncClient, task_id: str, status: str) -> dict[str, Any]:
    """PATCH the task's status; the updated task."""
    response = await api.patch(f"/tasks/{task_id}", json={"status": status})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def task_counts(
    api: httpx.AsyncClient, room_id: str, expected: dict[str, int]
) -> dict[str, int]:
    """Stuck, wrongly failed, lost and duplicated tasks of a room, against ``expected``
    (task id to how many times it was run)."""
    listed = (await api.get(f"/rooms/{room_id}/tasks?limit=500")).json()["items"]
    by_id = {task["id"]: task for task in listed}
    return {
        "stuck": sum(t["status"] in ("pending", "claimed", "running") for t in listed),
        "failed": sum(t["status"] == "failed" for t in listed),
        "lost": sum(task_id not in by_id for task_id in expected),
        "duplicated": sum(runs > 1 for runs in expected.values()),
    }


async def post_task(
    api: httpx.AsyncClient,
    room_id: str,
    job: str,
    payload: dict[str, Any],
    token: str = ALICE,
) -> httpx.Response:
    """``POST /rooms/{room_id}/tasks/{job}`` with ``payload`` as ``token``; the raw answer."""
    return await api.post(
        f"/rooms/{room_id}/tasks/{job}", json={"payload": payload}, headers=auth(token)
    )
