"""Refuse request bodies over a size limit with ``413``, before the app reads them whole."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from joblib_app.domain.errors import BodyTooLarge
from joblib_app.problems import BodyTooLargeError, problem_error_response


class BodySizeLimit:
    """ASGI middleware: ``limit_for(scope)`` bytes at most per HTTP request body."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit():
                if int(value) > limit:
                    response = problem_error_response(BodyTooLarge(limit), scope.get("path"))
                    await response(scope, receive, send)
                    return
                # The server delivers exactly Content-Length bytes (HTTP framing; with
                # Transfer-Encoding too the request is refused): nothing left to count.
                await self.app(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app's body read, so its handlers answer problem+json.
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, limited_receive, send)
