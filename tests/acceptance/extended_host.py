"""The test host, with the joblib app extended as any FastAPI app: a middleware, a router and
an exception handler added to the app ``create_joblib_app`` returned (not to the host).

The middleware records each request it sees and marks each answer; ``GET <mount>/host/seen``
(the added router's route) answers what it recorded; the exception handler answers every
``ProblemError`` with an ``X-Host-Handler`` header.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from joblib_app import ProblemError
from joblib_app.problems import problem_error_response
from tests.support.host import app, joblib

__all__ = ["app"]

SEEN: list[dict[str, str]] = []


class SeeRequests:
    """Records method and path (below the mount) of every HTTP request; marks the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        SEEN.append({"method": scope["method"], "path": path[len(scope.get("root_path", "")) :]})

        async def mark(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message["headers"], (b"x-host-middleware", b"seen")],
                }
            await send(message)

        await self.app(scope, receive, mark)


async def host_problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    response = problem_error_response(exc, request.url.path)
    response.headers["X-Host-Handler"] = exc.kind
    return response


host_router = APIRouter()


@host_router.get("/host/seen")
async def seen() -> list[dict[str, str]]:
    """What the host's middleware saw, oldest first (this request included)."""
    return SEEN


joblib.add_middleware(SeeRequests)
joblib.include_router(host_router)
joblib.add_exception_handler(ProblemError, host_problem_handler)
