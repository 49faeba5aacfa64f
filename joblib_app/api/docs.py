"""``/redoc`` with every asset from the package, and nothing fetched from elsewhere.

fastapi-offline serves Swagger UI and ReDoc from its own files; ReDoc's side menu still
shows its vendor's logo from a CDN (an image that hides itself when it fails to load). The
page's ``Content-Security-Policy`` keeps the browser from asking for it, so an offline or
firewalled browser sends no request outside the app.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse

# fastapi-offline's default mount of its static files inside the app.
STATIC_URL = "/static-offline-docs"


def install_redoc(api: FastAPI, path: str = "/redoc") -> None:
    """Serve ReDoc at ``path`` from the app's own static files (build ``api`` with
    ``FastAPIOffline(redoc_url=None)``)."""

    @api.get(path, include_in_schema=False)
    async def redoc_html(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{api.openapi_url}",
            title=f"{api.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page
