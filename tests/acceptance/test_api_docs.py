"""The OpenAPI document, ``/docs`` and ``/redoc`` at the mount, served by uvicorn.

The document must say what the app really answers (bearer security, every error as
problem+json, the real success statuses, the headers and bodies that FastAPI cannot see);
the pages must work with no internet: every asset comes from the app itself.
None of this touches the database, so one SQLite server serves the module, at a mount
path other than the default to show that the pages follow the mount.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.names import ALICE, PROBLEM
from tests.support.server import ServerProcess, serve
from tests.support.services import require_chromium

MOUNT = "/apps/jobs"
PROBLEM_REF = "#/components/schemas/Problem"
METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve("sqlite", tmp_path_factory.mktemp("docs"), mount=MOUNT) as server:
        yield server


@pytest.fixture(scope="module")
def document(docs_server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(docs_server.base + "/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method]
    return found


def parameter(op: dict[str, Any], name: str) -> dict[str, Any]:
    found = [p for p in op.get("parameters", []) if p["name"].lower() == name.lower()]
    assert len(found) == 1, op.get("parameters")
    only: dict[str, Any] = found[0]
    return only


def test_document_declares_bearer_security(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert list(schemes.values()) == [schemes["bearerAuth"]]
    assert schemes["bearerAuth"]["type"] == "http"
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert document["security"] == [{"bearerAuth": []}]
    assert document["servers"] == [{"url": MOUNT}]


def test_every_error_is_documented_as_problem_json(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in str(document)
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    count = 0
    for method, path, op in operations(document):
        count += 1
        responses = op["responses"]
        assert "401" in responses, (method, path)
        if "requestBody" in op:
            assert {"413", "422"} <= set(responses), (method, path)
        for status, entry in responses.items():
            if int(status) >= 400:
                assert entry["content"] == {PROBLEM: {"schema": {"$ref": PROBLEM_REF}}}, (
                    method,
                    path,
                    status,
                )
    assert count >= 20


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/rooms/{room_id}/tasks/{job_full_name}", {400, 401, 403, 404, 413, 422, 503}),
        ("put", "/rooms/{room_id}/jobs", {400, 401, 403, 404, 409, 413, 422}),
        ("patch", "/tasks/{task_id}", {401, 403, 404, 409, 413, 422}),
        ("post", "/tasks/claim", {401, 403, 404, 413, 422}),
        ("get", "/rooms/{room_id}/providers/{full_name}", {400, 401, 404, 503, 504}),
        ("post", "/providers/{provider_id}/results", {401, 403, 404, 413, 422, 503}),
        ("delete", "/workers/{worker_id}", {401, 403, 404}),
    ],
)
def test_errors_of_each_operation(
    document: dict[str, Any], method: str, path: str, statuses: set[int]
) -> None:
    documented = {int(s) for s in operation(document, method, path)["responses"] if int(s) >= 400}
    assert statuses <= documented


def test_retry_after_is_documented_where_it_is_sent(document: dict[str, Any]) -> None:
    read = operation(document, "get", "/rooms/{room_id}/providers/{full_name}")["responses"]
    assert "Retry-After" in read["504"]["headers"]
    assert "Retry-After" in read["503"]["headers"]


def test_success_statuses(document: dict[str, Any]) -> None:
    def successes(method: str, path: str) -> set[str]:
        return {s for s in operation(document, method, path)["responses"] if s < "400"}

    submit = operation(document, "post", "/rooms/{room_id}/tasks/{job_full_name}")
    assert successes("post", "/rooms/{room_id}/tasks/{job_full_name}") == {"202"}
    assert set(submit["responses"]["202"]["headers"]) == {"Location", "Retry-After"}
    assert successes("put", "/rooms/{room_id}/jobs") == {"200", "201"}
    assert successes("put", "/rooms/{room_id}/providers") == {"200", "201"}
    assert successes("post", "/workers") == {"201"}
    assert successes("delete", "/workers/{worker_id}") == {"204"}
    assert successes("delete", "/providers/{provider_id}") == {"204"}
    assert successes("post", "/providers/{provider_id}/results") == {"204"}
    registered = operation(document, "put", "/rooms/{room_id}/jobs")["responses"]
    for status in ("200", "201"):
        schema = registered[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/JobRegistered"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/tasks/{task_id}"),
        ("post", "/tasks/claim"),
        ("get", "/rooms/{room_id}/providers/{full_name}"),
    ],
)
def test_prefer_wait_header_is_documented(document: dict[str, Any], method: str, path: str) -> None:
    prefer = parameter(operation(document, method, path), "Prefer")
    assert prefer["in"] == "header"
    assert prefer["required"] is False
    assert "wait=N" in prefer["description"]


def test_provider_upload_body_and_read_parameters(document: dict[str, Any]) -> None:
    upload = operation(document, "post", "/providers/{provider_id}/results")
    content = upload["requestBody"]["content"]
    assert content == {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }
    request_hash = parameter(upload, "x-request-hash")
    # Optional in the schema: the route checks the provider and the caller first (404/403),
    # then answers a missing or malformed hash with 422 (issue 10 item 1).
    assert request_hash["required"] is False
    assert request_hash["schema"]["pattern"] == "^[0-9a-f]{64}$"
    read = operation(document, "get", "/rooms/{room_id}/providers/{full_name}")
    params = parameter(read, "params")
    assert params["in"] == "query"
    assert params["style"] == "form"
    assert params["explode"] is True
    assert params["schema"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert set(read["responses"]["200"]["content"]) == {"*/*"}


def test_allowed_categories_are_the_documented_enum(document: dict[str, Any]) -> None:
    category = document["components"]["schemas"]["JobRegister"]["properties"]["category"]
    assert category["enum"] == ["analysis", "modifiers", "selections"]


def test_summaries_are_plain_words(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        summary = op["summary"]
        assert re.fullmatch(r"[A-Z][a-z' ]+[a-z ,()']*", summary), (method, path, summary)
        assert "``" not in op.get("description", ""), (method, path)


def test_documented_401_is_answered_on_every_operation(
    document: dict[str, Any], docs_server: ServerProcess
) -> None:
    """Each operation, called with a bad token, answers the documented 401 problem."""
    with httpx.Client(timeout=10) as client:
        for method, path, _ in operations(document):
            url = docs_server.base + re.sub(r"\{\w+\}", "x:y:z", path)
            response = client.request(
                method.upper(), url, headers={"Authorization": "Bearer nobody"}
            )
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["content-type"] == PROBLEM, (method, path)
            body = response.json()
            assert body["status"] == 401
            assert set(body) >= {"type", "title", "status", "detail"}


def asset_urls(html: str) -> list[str]:
    """Every URL a docs page loads: scripts, styles, icons and the OpenAPI document."""
    urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", html)
    urls += re.findall(r"""url:\s*["']([^"']+)["']""", html)
    return urls


@pytest.mark.parametrize("page", ["docs", "redoc"])
def test_docs_pages_load_every_asset_from_the_app(docs_server: ServerProcess, page: str) -> None:
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{docs_server.base}/{page}")
        assert response.status_code == 200
        urls = asset_urls(response.text)
        assert any(u.endswith(".js") for u in urls), urls
        assert f"{MOUNT}/openapi.json" in urls
        for url in urls:
            # A path on this server, below the mount: no CDN, no other host.
            assert urlsplit(url).netloc == "", url
            assert url.startswith(MOUNT + "/"), url
            asset = client.get(docs_server.origin + url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 0, url
        scripts = [u for u in urls if u.endswith(".js")]
        for url in scripts:
            media = client.get(docs_server.origin + url).headers["content-type"]
            assert "javascript" in media, (url, media)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        try:
            yield instance
        finally:
            instance.close()


def offline_page(browser: Any, origin: str, blocked: list[str]) -> Any:
    """A page that may load from ``origin`` only; anything else is aborted and recorded."""
    context = browser.new_context()

    def only_the_app(route: Any) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_app)
    return context.new_page()


def test_swagger_ui_renders_with_no_outside_network(
    browser: Any, docs_server: ServerProcess, document: dict[str, Any], tmp_path: Path
) -> None:
    blocked: list[str] = []
    page = offline_page(browser, docs_server.origin, blocked)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(docs_server.base + "/docs")
    page.wait_for_selector(".opblock-summary", timeout=30_000)
    assert page.locator(".opblock").count() == len(list(operations(document)))
    # The security scheme gives the page its Authorize button.
    assert page.locator("button.authorize").count() == 1
    assert page.get_by_text("Submit a task to a job").count() >= 1
    page.screenshot(path=str(tmp_path / "swagger.png"))
    assert blocked == []
    assert errors == []


def test_redoc_renders_with_no_outside_network(
    browser: Any, docs_server: ServerProcess, tmp_path: Path
) -> None:
    blocked: list[str] = []
    page = offline_page(browser, docs_server.origin, blocked)
    page.goto(docs_server.base + "/redoc")
    page.get_by_role("heading", name="Read data through a provider").wait_for(timeout=30_000)
    assert page.get_by_text("Problem").count() >= 1
    page.screenshot(path=str(tmp_path / "redoc.png"))
    assert blocked == []


def test_docs_do_not_need_credentials_but_the_api_does(docs_server: ServerProcess) -> None:
    """The pages are public (as FastAPI's are); every operation they list needs a token."""
    assert httpx.get(docs_server.base + "/docs", timeout=10).status_code == 200
    response = httpx.get(
        docs_server.base + "/workers", headers={"Authorization": f"Bearer {ALICE}"}, timeout=10
    )
    assert response.status_code == 200
    assert httpx.get(docs_server.base + "/workers", timeout=10).status_code == 401
