"""The app ``create_joblib_app`` returns is a FastAPI app, extended as any: the middleware,
routes and exception handlers a host adds apply to every route, the task routes included;
and every route answers 405, ``Allow``, HEAD and OPTIONS by the same rules."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import fastapi
import httpx
import pytest

from joblib_app import JoblibConfig, create_joblib_app, static_token_authenticator
from tests.support.api import Api
from tests.support.databases import database
from tests.support.names import ALICE, assert_problem, new_room, unique
from tests.support.server import ServerProcess, serve, server_env

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# The per-task routes, served by plain endpoints (api.plain); every other is FastAPI's.
TASK_ROUTES = {
    ("POST", "/rooms/{room_id}/tasks/{job_full_name}"),
    ("POST", "/tasks/claim"),
    ("GET", "/tasks/{task_id}"),
    ("PATCH", "/tasks/{task_id}"),
}


def test_create_joblib_app_returns_a_fastapi_app(tmp_path: Path) -> None:
    joblib = create_joblib_app(
        JoblibConfig(
            authenticate=static_token_authenticator({}),
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'joblib.db'}",
        )
    )
    assert isinstance(joblib, fastapi.FastAPI)
    assert not joblib.started


async def test_served_on_its_own_its_lifespan_starts_and_stops_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("toplevel")
    log = workdir / "server.log"
    with (
        database("sqlite", workdir) as url,
        ServerProcess(
            server_env(url), mount="", app="tests.acceptance.toplevel_host:joblib", log_path=log
        ) as server,
    ):
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await client.get(server.origin + "/health")).json() == {"started": True}
            api = Api(client, server)
            room = new_room()
            job = await api.register(room, unique())
            task = await api.submit(room, job["full_name"])
            assert (await api.claim_one(job["worker_id"]))["id"] == task["id"]
    text = log.read_text()
    assert "starting on its first request" not in text
    # Started by the server's lifespan at boot, stopped by it at SIGTERM.
    assert "joblib-app started" in text and "joblib-app stopped" in text, text


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("extended")
    with (
        database("sqlite", workdir) as url,
        ServerProcess(
            server_env(url),
            app="tests.acceptance.extended_host:app",
            log_path=workdir / "server.log",
        ) as server,
    ):
        yield server


@pytest.fixture
async def api(extended: ServerProcess) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(client, extended)


async def test_host_middleware_and_route_see_the_task_routes(api: Api) -> None:
    room = new_room()
    job = await api.register(room, unique())
    task = await api.submit(room, job["full_name"])
    assert (await api.claim_one(job["worker_id"]))["id"] == task["id"]
    running = await api.patch_task(task["id"], "running")
    assert running.headers["x-host-middleware"] == "seen"
    read = await api.request("GET", f"/tasks/{task['id']}")
    assert read.headers["x-host-middleware"] == "seen"

    seen = await api.request("GET", "/host/seen")
    assert seen.status_code == 200
    assert seen.headers["x-host-middleware"] == "seen"
    requests = {(r["method"], r["path"]) for r in seen.json()}
    assert {
        ("POST", f"/rooms/{room}/tasks/{job['full_name']}"),
        ("POST", "/tasks/claim"),
        ("PATCH", f"/tasks/{task['id']}"),
        ("GET", f"/tasks/{task['id']}"),
        ("GET", "/host/seen"),
    } <= requests


async def test_host_exception_handler_answers_the_task_routes_problems(api: Api) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    cases = [
        (await api.request("GET", f"/tasks/{missing}"), 404, "task-not-found"),
        (await api.patch_task(missing, "running"), 404, "task-not-found"),
        (await api.request("POST", "/tasks/claim", json={}), 422, "validation-error"),
        (await api.request("POST", f"/rooms/{new_room()}/tasks/x", None, json={}), 401, None),
        # And a FastAPI route's, for comparison.
        (await api.request("GET", "/workers", None), 401, None),
    ]
    for response, status, kind in cases:
        body = assert_problem(response, status, kind)
        assert response.headers["x-host-handler"] == body["type"].rsplit("/", 1)[1]
        assert response.headers["x-host-middleware"] == "seen"


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", template) + "$")


@pytest.fixture(scope="module")
def plain_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve("sqlite", tmp_path_factory.mktemp("plain")) as server:
        yield server


async def test_405_allow_head_and_options_alike_on_every_route(plain_host: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(client, plain_host)
        document: dict[str, Any] = (await client.get(plain_host.base + "/openapi.json")).json()
        paths: dict[str, set[str]] = {
            template: {method.upper() for method in operations}
            for template, operations in document["paths"].items()
        }
        documented = {(m, template) for template, methods in paths.items() for m in methods}
        # Both kinds of route are in the document, so both are checked.
        assert TASK_ROUTES <= documented and len(documented) > len(TASK_ROUTES)
        for template in paths:
            path = re.sub(r"\{\w+\}", "x1", template)
            # Every route that serves this concrete path counts (/tasks/claim is also a
            # /tasks/{task_id}), HEAD wherever GET.
            served = set().union(*(m for t, m in paths.items() if _pattern(t).match(path)))
            allowed = served | ({"HEAD"} if "GET" in served else set())
            for method in METHODS:
                if method in served:
                    continue  # Served: not called here (they would change data).
                response = await api.request(method, path, ALICE)
                if method == "HEAD" and "GET" in served:
                    get = await api.request("GET", path, ALICE)
                    assert response.status_code == get.status_code, (path, response.headers)
                    assert response.headers["content-type"] == get.headers["content-type"]
                    assert response.content == b""
                    continue
                if method == "HEAD":
                    assert response.status_code == 405, path
                else:
                    assert_problem(response, 405, "method-not-allowed")
                allow = set(response.headers["allow"].split(", "))
                assert allow == allowed, (method, path, response.headers)
