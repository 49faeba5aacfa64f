"""FastAPI dependencies of the routers: the app context, the caller, paging."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from starlette.requests import HTTPConnection

from joblib_app.context import AppContext
from joblib_app.domain.errors import Unauthorized
from joblib_app.domain.prefer import parse_prefer_wait
from joblib_app.limits import MAX_OFFSET
from joblib_app.principal import Principal

MAX_PAGE_SIZE = 500


async def get_context(request: Request) -> AppContext:
    """The app context. Async on purpose: FastAPI runs a sync dependency in a worker thread,
    a thread hop on every request for a plain attribute read."""
    ctx: AppContext = request.app.state.joblib
    return ctx


async def authenticate(conn: HTTPConnection, ctx: AppContext) -> Principal:
    """The caller according to the host's ``authenticate``, or ``401 unauthorized``."""
    principal = await ctx.config.authenticate(conn)
    if principal is None:
        raise Unauthorized()
    return principal


async def get_principal(
    request: Request, ctx: Annotated[AppContext, Depends(get_context)]
) -> Principal:
    """The dependency form of :func:`authenticate`."""
    return await authenticate(request, ctx)


Ctx = Annotated[AppContext, Depends(get_context)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
Limit = Annotated[int, Query(ge=0, le=MAX_PAGE_SIZE)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def prefer_wait(request: Request) -> float | None:
    """Seconds asked for by a ``Prefer: wait=N`` header, if any."""
    return parse_prefer_wait(request.headers.get("prefer"))
