"""One routing table: the 405, ``Allow`` and HEAD answers of every route of the app.

Every route of the app, FastAPI's and the plain task routes alike, is matched by the app's
own router; this wraps that router's dispatch (as Starlette's ``Router(middleware=...)``
would), so these answers are the same on every path:

- ``404`` comes from the router (no route matches the path).
- ``405``'s ``Allow`` lists every method any route serves on the path, ``HEAD`` wherever
  ``GET`` is. Starlette and FastAPI list the methods of the first route that matched the
  path only. It is raised as an ``HTTPException``, so the app's exception handlers (the
  problem+json one, or a host's) answer it.
- ``HEAD`` is served by the path's ``GET`` route where no route serves ``HEAD`` itself:
  Starlette's ``Route`` adds ``HEAD`` to ``GET``, FastAPI's ``APIRoute`` does not. The
  server sends no body for a ``HEAD`` request.
- ``OPTIONS`` is no exception: no route serves it, so it is ``405`` with ``Allow`` (a host's
  ``CORSMiddleware`` answers CORS preflights before routing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send


def allow_list(methods: Iterable[str]) -> list[str]:
    """The methods of an ``Allow`` header, sorted, with HEAD wherever GET is."""
    found = set(methods)
    if "GET" in found:
        found.add("HEAD")
    return sorted(found)


def path_methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """Every method a route of ``routes`` (included routers' too) serves on the request's
    path, whatever the request's method."""
    found: set[str] = set()
    for context in iter_route_contexts(routes):
        methods = context.methods
        if methods:
            matched, _ = context.matches(scope)
            if matched is not Match.NONE:
                found.update(methods)
    return found


class MethodRouting:
    """The router's dispatch, with one ``405``/``Allow`` and ``HEAD`` rule for every route."""

    def __init__(self, router: Router, dispatch: ASGIApp) -> None:
        self.router = router
        self.dispatch = dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.dispatch(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            # Only HEAD pays for this look-up; the request is routed as GET when nothing
            # serves HEAD itself (a copy: the server keeps the original, and drops the body).
            methods = path_methods(self.router.routes, scope)
            if "GET" in methods and "HEAD" not in methods:
                scope = {**scope, "method": "GET"}
        try:
            await self.dispatch(scope, receive, send)
        except HTTPException as exc:
            if exc.status_code != 405:
                raise
            methods = path_methods(self.router.routes, scope)
            if not methods:
                # From inside a mount (the docs' static files): its own answer stands.
                raise
            allow = ", ".join(allow_list(methods))
            raise HTTPException(405, headers={"Allow": allow}) from exc


def install_method_routing(router: Router) -> None:
    """Wrap ``router``'s dispatch in :class:`MethodRouting` (once, before it serves)."""
    router.middleware_stack = MethodRouting(router, router.middleware_stack)
