"""``/docs`` and ``/redoc`` with every asset from the package, and nothing fetched from elsewhere.

Swagger UI and ReDoc come from fastapi-offline's copies, served by this app under
``<mount>/static-offline-docs``, so the pages need no internet. ReDoc's side menu still shows
its vendor's logo from a CDN (an image that hides itself when it fails to load); the page's
``Content-Security-Policy`` keeps the browser from asking for it, so an offline or firewalled
browser sends no request outside the app.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

# Where fastapi-offline keeps its assets, and where its own FastAPIOffline serves them.
STATIC_DIR = Path(fastapi_offline.__file__).parent / "static"
STATIC_URL = "/static-offline-docs"


def install_offline_docs(api: FastAPI, docs: str = "/docs", redoc: str = "/redoc") -> None:
    """Serve Swagger UI at ``docs`` and ReDoc at ``redoc`` from the app's own static files
    (build ``api`` with ``docs_url=None, redoc_url=None``), at any mount path."""
    api.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static-offline-docs")
    oauth2_redirect = api.swagger_ui_oauth2_redirect_url or f"{docs}/oauth2-redirect"

    @api.get(docs, include_in_schema=False)
    async def swagger_ui_html(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{api.openapi_url}",
            title=f"{api.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            swagger_ui_parameters=api.swagger_ui_parameters,
        )

    @api.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @api.get(redoc, include_in_schema=False)
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
