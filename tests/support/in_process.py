"""The test host in process: its FastAPI app behind httpx's ``ASGITransport``, lifespan run.

For integration tests of the API: the same host as the acceptance servers
(``tests/support/host.py``) and the same :class:`~tests.support.api.Api`, without a uvicorn
process or a socket, so a module's app starts in a fraction of a server's time.
"""

from __future__ import annotations

import contextlib
import os
import runpy
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

ORIGIN = "http://testserver"


@dataclass
class InProcess:
    """An app served in process; ``base`` is the joblib mount URL, ``origin`` the host's."""

    app: FastAPI
    joblib: Any
    mount: str
    client: httpx.AsyncClient

    @property
    def origin(self) -> str:
        return ORIGIN

    @property
    def base(self) -> str:
        return ORIGIN + self.mount


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``env`` set, restored afterwards (the host reads it on import)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_host(env: Mapping[str, str], mount: str = "/v1/joblib") -> tuple[FastAPI, Any]:
    """A fresh host app and its joblib app, configured by ``env`` as a server would be.

    The host module is run afresh (not imported), so each call builds its own app and
    settings, and ``sys.modules`` keeps no half-configured host.
    """
    with _environment({**env, "JOBLIB_TEST_MOUNT": mount}):
        namespace = runpy.run_module("tests.support.host", run_name="tests_support_host")
    app = namespace["app"]
    assert isinstance(app, FastAPI)
    return app, namespace["joblib"]


@contextlib.asynccontextmanager
async def serve_in_process(
    env: Mapping[str, str], mount: str = "/v1/joblib"
) -> AsyncIterator[InProcess]:
    """The host app with its lifespan running and an httpx client on it."""
    app, joblib = build_host(env, mount)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, timeout=30) as client:
            yield InProcess(app, joblib, mount, client)
