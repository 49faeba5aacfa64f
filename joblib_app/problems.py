"""RFC 9457 problem details: the one error shape every endpoint answers with.

The errors themselves are :mod:`joblib_app.domain.errors`, one class per problem kind, all
:class:`ProblemError`; this module is the one place that turns them into
``application/problem+json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# Re-exported: hosts raise and catch it from here.
from joblib_app.domain.errors import PROBLEM_TYPE_PREFIX as PROBLEM_TYPE_PREFIX
from joblib_app.domain.errors import (
    BodyTooLarge,
    DatabaseUnavailable,
    ValidationFailed,
)
from joblib_app.domain.errors import ProblemError as ProblemError

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"


class BodyTooLargeError(StarletteHTTPException):
    """A body that outgrew its limit while being read: answered as ``413 content-too-large``.

    An HTTPException because FastAPI re-raises those from its body read and turns any other
    exception there into ``400``.
    """

    def __init__(self, limit: int) -> None:
        self.problem = BodyTooLarge(limit)
        super().__init__(413, self.problem.detail)


def problem_response(
    status: int,
    kind: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + kind,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_CONTENT_TYPE
    )


def _kind_for_status(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return "error"


def problem_error_response(exc: ProblemError, instance: str | None) -> JSONResponse:
    """The problem+json answer of ``exc`` (its headers, and ``errors`` for a 422)."""
    return problem_response(
        exc.status,
        exc.kind,
        exc.title,
        exc.detail,
        instance=instance,
        headers=exc.headers,
        extra={"errors": exc.errors} if exc.errors is not None else None,
    )


def internal_error_response(instance: str | None) -> JSONResponse:
    """The ``500`` answer of an unhandled error (its traceback goes to the log)."""
    return problem_response(
        500,
        "internal-error",
        "Internal server error",
        "The server failed to handle this request; see its log.",
        instance=instance,
    )


async def _handle_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_error_response(exc, request.url.path)


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, BodyTooLargeError):
        return problem_error_response(exc.problem, request.url.path)
    if isinstance(exc.__cause__, RecursionError):
        # FastAPI's body parse hit Python's stack: JSON nested far past any depth bound.
        error = {"loc": ["body"], "msg": "JSON nested too deeply", "type": "value_error"}
        return problem_error_response(ValidationFailed([error]), request.url.path)
    kind = _kind_for_status(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return problem_response(
        exc.status_code,
        kind,
        kind.replace("-", " ").capitalize(),
        detail,
        instance=request.url.path,
        headers=exc.headers,
    )


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return await _handle_problem(request, ValidationFailed(errors))


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Imported here: the store (SQLAlchemy) is not loaded by importing the error shape.
    from joblib_app.store.connection_loss import is_connection_lost

    if is_connection_lost(exc):
        logger.warning(
            "Database connection lost on %s %s: %s", request.method, request.url.path, exc
        )
        return await _handle_problem(request, DatabaseUnavailable())
    logger.exception("Unhandled error on %s %s", request.method, request.url.path)
    return internal_error_response(request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` answer problem+json."""
    app.add_exception_handler(ProblemError, _handle_problem)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(Exception, _handle_unexpected)
