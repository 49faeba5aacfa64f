"""The endpoints every worker calls once or more per task: ordinary routes, cheap endpoints.

Submit, claim, read and update run for every task. They are routes of the app like any
other (:class:`PlainRoute`, a FastAPI ``APIRoute``): the host's middleware and exception
handlers apply to them, the app's router matches them and answers their 404, 405 and HEAD,
and FastAPI documents them from their declaration. Only the endpoint is different: a plain
handler that reads the body with pydantic-core and writes serialised JSON, skipping
FastAPI's dependency injection and response validation, which cost several times what the
work itself does. A :class:`~joblib_app.problems.ProblemError` it raises reaches the app's
exception handlers as any route's does.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from joblib_app.api.deps import authenticate
from joblib_app.api.openapi import problem_response as problem_doc
from joblib_app.context import AppContext
from joblib_app.domain.errors import BodyTooLarge, ProblemError, ValidationFailed
from joblib_app.principal import Principal
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
            raise BodyTooLarge(limit)
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise BodyTooLarge(limit)
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
            raise ValidationFailed([missing])
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
            raise ValidationFailed(
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
    return ValidationFailed([error])


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == _JSON or (media.startswith(b"application/") and media.endswith(b"+json"))


Handler = Callable[[PlainRequest], Awaitable[PlainResponse]]


class PlainOperation:
    """A plain route's declaration, and the endpoint FastAPI documents it by.

    Its signature names what the route reads (the path parameters as strings, the body as
    ``body``), so FastAPI's own OpenAPI generation describes it as any route; calling it
    serves nothing, the route's ASGI app (:class:`PlainEndpoint`) does.
    """

    def __init__(
        self,
        method: str,
        path: str,
        handler: Handler,
        options: dict[str, Any],
        body: type[BaseModel] | None,
    ) -> None:
        self.method = method
        self.path = path
        self.handler = handler
        # Keyword arguments of ``APIRoute`` (response model, status, responses, ...).
        self.options = options
        self.__name__ = handler.__name__
        self.__doc__ = handler.__doc__
        parameters = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str)
            for name in _path_parameters(path)
        ]
        if body is not None:
            parameters.append(
                inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body)
            )
        self.__signature__ = inspect.Signature(parameters)

    async def __call__(self, **_: Any) -> None:
        raise RuntimeError(
            f"{self.__name__} is served by its plain handler; add it with add_plain_routes"
        )


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


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
) -> PlainOperation:
    """Declare a plain route; ``path`` uses ``{name}`` for one path segment, as FastAPI's do.

    ``response`` and ``body`` (models), ``summary``, ``errors`` (problem statuses besides 401,
    413 and 422, see :mod:`joblib_app.api.openapi`), ``parameters`` (extra OpenAPI parameter
    objects) and ``response_headers`` (name to description) only feed the OpenAPI document:
    the handler reads and answers by itself.
    """
    doc = inspect.getdoc(handler) or ""
    answer: dict[str, Any] = {}
    if response_headers:
        answer["headers"] = {
            name: {"description": why, "schema": {"type": "string"}}
            for name, why in response_headers.items()
        }
    responses: dict[int | str, dict[str, Any]] = {status: answer}
    responses.update({code: problem_doc(code) for code in errors})
    options: dict[str, Any] = {
        "response_model": response,
        "status_code": status,
        "summary": summary or doc.split("\n", 1)[0],
        "description": doc,
        "response_description": "OK" if status == 200 else "Accepted",
        "responses": responses,
        "operation_id": handler.__name__,
    }
    if parameters:
        # FastAPI appends these to the parameters it found in the signature.
        options["openapi_extra"] = {"parameters": list(parameters)}
    return PlainOperation(method, path, handler, options, body)


class PlainRoute(APIRoute):
    """An ``APIRoute`` documented as FastAPI documents any, served by a plain handler.

    Built by :func:`add_plain_routes` from a :class:`PlainOperation` endpoint.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not isinstance(endpoint, PlainOperation):
            raise TypeError("a PlainRoute's endpoint is a PlainOperation (see route())")
        super().__init__(path, endpoint, **kwargs)
        # Replaces FastAPI's request handler (dependency injection, response validation).
        self.app = PlainEndpoint(endpoint.handler)


def add_plain_routes(app: FastAPI, operations: Sequence[PlainOperation], *, tag: str) -> None:
    """Add ``operations`` to ``app``'s routes, in order, documented under ``tag``.

    They go first in the routing table: the router tries routes in order, and these are
    the ones every worker calls for every task.
    """
    routes = app.router.routes
    start = len(routes)
    for operation in operations:
        app.router.add_api_route(
            operation.path,
            operation,
            methods=[operation.method],
            tags=[tag],
            route_class_override=PlainRoute,
            **operation.options,
        )
    added = routes[start:]
    del routes[start:]
    routes[0:0] = added


class PlainEndpoint:
    """The ASGI app of a plain route: the handler's answer, or its exception raised.

    The app context is the serving app's ``state.joblib``, as for the FastAPI routes.
    """

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: AppContext = scope["app"].state.joblib
        params: dict[str, str] = scope["path_params"]
        try:
            response = await self.handler(PlainRequest(scope, receive, ctx, params))
        except Exception as exc:
            if not is_connection_lost(exc):
                raise
            if scope["method"] not in ("GET", "HEAD"):
                # A write may or may not have committed: the client decides.
                logger.warning("Database connection lost on %s %s", scope["method"], scope["path"])
                raise database_unavailable() from exc
            # A read is safe to run again, once, on a fresh connection.
            logger.info("Database connection lost on %s; reading again", scope["path"])
            try:
                response = await self.handler(PlainRequest(scope, receive, ctx, params))
            except Exception as again:
                if not is_connection_lost(again):
                    raise
                raise database_unavailable() from again
        await send_json(send, response)


async def send_json(send: Send, response: PlainResponse) -> None:
    """Send ``response`` as the whole ``application/json`` answer."""
    headers = [
        (b"content-length", str(len(response.body)).encode()),
        (b"content-type", _JSON),
    ]
    if response.headers:
        headers.extend((k.lower().encode(), v.encode()) for k, v in response.headers.items())
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
