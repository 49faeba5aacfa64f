"""Plain ASGI routing for the endpoints every worker calls once or more per task.

Submit, claim, read and update run for every task, so they skip FastAPI's per-request
machinery (middleware stack, dependency injection, response-model validation), which
costs several times what the work itself does. They keep the contract byte for byte: the
same authentication, body limit, problem+json errors (401, 404, 405, 413, 422, 500) and
bodies. Everything else is served by the FastAPI app.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from joblib_app.api.deps import authenticate
from joblib_app.api.openapi import problem_response as problem_doc
from joblib_app.context import AppContext
from joblib_app.principal import Principal
from joblib_app.problems import (
    ProblemError,
    internal_error_response,
    problem_error_response,
    too_large_problem,
    validation_problem,
)
from joblib_app.store.connection_loss import database_unavailable, is_connection_lost

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
_JSON = b"application/json"


@dataclass(frozen=True, slots=True)
class PlainResponse:
    """A JSON body already serialised, with its status and extra headers."""

    body: bytes
    status: int = 200
    headers: Mapping[str, str] | None = None


class PlainRequest:
    """What a plain handler needs from its request: scope, headers, body, caller."""

    __slots__ = ("_headers", "ctx", "path_params", "receive", "scope")

    def __init__(
        self, scope: Scope, receive: Receive, ctx: AppContext, path_params: dict[str, str]
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.ctx = ctx
        self.path_params = path_params
        self._headers: dict[bytes, bytes] | None = None

    def header(self, name: bytes) -> bytes | None:
        """A request header by its lower-case name (the last one if repeated)."""
        if self._headers is None:
            self._headers = dict(self.scope["headers"])
        return self._headers.get(name)

    async def principal(self) -> Principal:
        """The caller, through the host's ``authenticate``; ``401`` if there is none."""
        return await authenticate(HTTPConnection(self.scope, self.receive), self.ctx)

    async def body(self, limit: int) -> bytes:
        """The whole body; ``413`` once it is known to exceed ``limit`` bytes."""
        length = self.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large_problem(limit)
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise too_large_problem(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def json_body(self, model: type[ModelT], *, limit: int | None = None) -> ModelT:
        """The body validated as ``model``; errors answer ``422`` as FastAPI's would.

        ``limit`` replaces ``max_request_body_bytes`` for this route's body.
        """
        raw = await self.body(self.ctx.settings.max_request_body_bytes if limit is None else limit)
        if not raw:
            missing = {"loc": ["body"], "msg": "Field required", "type": "missing"}
            raise validation_problem([missing])
        content_type = self.header(b"content-type")
        try:
            if content_type is None or _is_json(content_type):
                # pydantic-core parses and validates in one pass, without building dicts.
                return model.model_validate_json(raw)
            return model.model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors()
            if any(e["type"] == "json_invalid" for e in errors):
                raise _json_problem(raw) from exc
            raise validation_problem(
                [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors]
            ) from exc


def _json_problem(raw: bytes) -> ProblemError:
    """``422 json_invalid`` located as FastAPI locates it: the character offset."""
    try:
        json.loads(raw)
        position = 0
    except ValueError as exc:
        position = getattr(exc, "pos", 0)
    except RecursionError:
        # Nested past Python's stack (pydantic refused it at its own depth limit): the
        # position is unknown, the answer still 422.
        position = 0
    error = {"loc": ["body", position], "msg": "JSON decode error", "type": "json_invalid"}
    return validation_problem([error])


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == _JSON or (media.startswith(b"application/") and media.endswith(b"+json"))


Handler = Callable[[PlainRequest], Awaitable[PlainResponse]]


@dataclass(frozen=True, slots=True)
class PlainRoute:
    method: str
    path: str
    pattern: re.Pattern[str]
    handler: Handler
    # For the OpenAPI document only: what the route reads and answers.
    body: type[BaseModel] | None
    response: type[BaseModel]
    status: int
    summary: str = ""
    # Problem statuses the route can answer besides 401, 413 and 422 (see api.openapi).
    errors: tuple[int, ...] = ()
    parameters: tuple[dict[str, Any], ...] = ()
    response_headers: Mapping[str, str] | None = None


def route(
    method: str,
    path: str,
    handler: Handler,
    *,
    response: type[BaseModel],
    body: type[BaseModel] | None = None,
    status: int = 200,
    summary: str = "",
    errors: tuple[int, ...] = (),
    parameters: tuple[dict[str, Any], ...] = (),
    response_headers: Mapping[str, str] | None = None,
) -> PlainRoute:
    """``path`` uses ``{name}`` for one path segment, as FastAPI's routes do.

    ``summary``, ``errors``, ``parameters`` (extra OpenAPI parameter objects) and
    ``response_headers`` (name to description) only feed the OpenAPI document.
    """
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return PlainRoute(
        method,
        path,
        re.compile(f"^{regex}$"),
        handler,
        body,
        response,
        status,
        summary,
        errors,
        parameters,
        response_headers,
    )


def document_routes(api: FastAPI, routes: Sequence[PlainRoute], tag: str) -> None:
    """Add ``routes`` to ``api``'s OpenAPI document, which only knows FastAPI's own routes."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = generate()
        models = {m for r in routes for m in (r.body, r.response) if m is not None}
        refs, definitions = models_json_schema(
            [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(definitions.get("$defs", {}))
        for r in routes:
            doc = inspect.getdoc(r.handler) or ""
            answer: dict[str, Any] = {
                "description": "OK" if r.status == 200 else "Accepted",
                "content": {"application/json": {"schema": refs[(r.response, "validation")]}},
            }
            if r.response_headers:
                answer["headers"] = {
                    name: {"description": why, "schema": {"type": "string"}}
                    for name, why in r.response_headers.items()
                }
            responses: dict[str, Any] = {str(r.status): answer}
            responses.update({str(s): problem_doc(s) for s in r.errors})
            operation: dict[str, Any] = {
                "tags": [tag],
                "summary": r.summary or doc.split("\n", 1)[0],
                "description": doc,
                "operationId": r.handler.__name__,
                "parameters": [
                    {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                    for n in r.pattern.groupindex
                ]
                + list(r.parameters),
                "responses": responses,
            }
            if r.body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": refs[(r.body, "validation")]}},
                }
            schema.setdefault("paths", {}).setdefault(r.path, {})[r.method.lower()] = operation
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def allow_list(methods: Iterable[str]) -> list[str]:
    """The methods of an ``Allow`` header, sorted, with HEAD wherever GET is."""
    found = set(methods)
    if "GET" in found:
        found.add("HEAD")
    return sorted(found)


def route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path in ``scope``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class PlainRouter:
    """Matches a request to a plain route; ``None`` hands it to the FastAPI app."""

    def __init__(
        self,
        routes: Sequence[PlainRoute],
        ctx: AppContext,
        other_methods: Callable[[Scope], Iterable[str]] | None = None,
    ) -> None:
        self.routes = tuple(routes)
        self.ctx = ctx
        # Methods other routes (the FastAPI app's) serve on a path, for a 405's ``Allow``.
        self.other_methods = other_methods

    def match(self, scope: Scope) -> Callable[[Receive, Send], Awaitable[None]] | None:
        path = route_path(scope)
        # As Starlette does: HEAD is served by the GET route (the server drops the body).
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        allowed: list[str] = []
        for candidate in self.routes:
            found = candidate.pattern.match(path)
            if found is None:
                continue
            if candidate.method != method:
                allowed.append(candidate.method)
                continue
            return functools.partial(self._serve, candidate.handler, scope, found.groupdict())
        if not allowed:
            return None
        if self.other_methods is not None:
            allowed.extend(self.other_methods(scope))
        allowed = allow_list(allowed)

        async def refuse(receive: Receive, send: Send) -> None:
            problem = ProblemError(
                405,
                "method-not-allowed",
                "Method Not Allowed",
                headers={"Allow": ", ".join(allowed)},
            )
            await _send_problem(problem, scope, receive, send)

        return refuse

    async def _serve(
        self,
        handler: Handler,
        scope: Scope,
        params: dict[str, str],
        receive: Receive,
        send: Send,
    ) -> None:
        request = PlainRequest(scope, receive, self.ctx, params)
        try:
            try:
                response = await handler(request)
            except Exception as exc:
                if not is_connection_lost(exc):
                    raise
                if scope["method"] not in ("GET", "HEAD"):
                    # A write may or may not have committed: the client decides.
                    logger.warning(
                        "Database connection lost on %s %s", scope["method"], scope["path"]
                    )
                    raise database_unavailable() from exc
                # A read is safe to run again, once, on a fresh connection.
                logger.info("Database connection lost on %s; reading again", scope["path"])
                try:
                    response = await handler(PlainRequest(scope, receive, self.ctx, params))
                except Exception as again:
                    if not is_connection_lost(again):
                        raise
                    raise database_unavailable() from again
        except ProblemError as exc:
            await _send_problem(exc, scope, receive, send)
            return
        except Exception:
            logger.exception("Unhandled error on %s %s", scope["method"], scope["path"])
            await internal_error_response(scope["path"])(scope, receive, send)
            return
        await send_json(send, response)


async def _send_problem(exc: ProblemError, scope: Scope, receive: Receive, send: Send) -> None:
    await problem_error_response(exc, scope["path"])(scope, receive, send)


async def send_json(send: Send, response: PlainResponse) -> None:
    headers = [
        (b"content-length", str(len(response.body)).encode()),
        (b"content-type", _JSON),
    ]
    if response.headers:
        headers.extend((k.lower().encode(), v.encode()) for k, v in response.headers.items())
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
