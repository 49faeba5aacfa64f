"""FastAPI dependencies of the routers: the app context, the caller, paging."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Query, Request
from starlette.requests import HTTPConnection

from joblib_app.context import AppContext
from joblib_app.limits import MAX_OFFSET
from joblib_app.principal import Principal
from joblib_app.problems import ProblemError

MAX_PAGE_SIZE = 500
# Exponents included: ``wait=1e9`` is a billion seconds (then capped), not one.
_PREFER_WAIT = re.compile(
    r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\"?", re.IGNORECASE
)


async def get_context(request: Request) -> AppContext:
    """The app context. Async on purpose: FastAPI runs a sync dependency in a worker thread,
    a thread hop on every request for a plain attribute read."""
    return request.app.state.joblib


async def authenticate(conn: HTTPConnection, ctx: AppContext) -> Principal:
    principal = await ctx.config.authenticate(conn)
    if principal is None:
        raise ProblemError(
            401,
            "unauthorized",
            "Authentication required",
            title="Unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


async def get_principal(
    request: Request, ctx: Annotated[AppContext, Depends(get_context)]
) -> Principal:
    return await authenticate(request, ctx)


Ctx = Annotated[AppContext, Depends(get_context)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
Limit = Annotated[int, Query(ge=0, le=MAX_PAGE_SIZE)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def prefer_wait(request: Request) -> float | None:
    """Seconds asked for by a ``Prefer: wait=N`` header, if any."""
    return parse_prefer_wait(request.headers.get("prefer"))


def parse_prefer_wait(header: str | None) -> float | None:
    """Seconds asked for by the value of a ``Prefer`` header (``wait=N``), if any."""
    if not header:
        return None
    match = _PREFER_WAIT.search(header)
    return float(match.group(1)) if match else None


def format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
