"""Fixtures of the provider acceptance tests: one server per module and result backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.api import Api
from tests.support.providers import BACKENDS, ProviderServer, serve_providers
from tests.support.services import require_redis


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProviderServer]:
    """The test host under uvicorn: ``memory`` has no Redis, ``redis`` uses the shared one.

    A module may set ``SERVER_SETTINGS`` (a dict of ``ZNDRAW_JOBLIB_*`` variables).
    """
    redis_url = require_redis() if request.param == "redis" else None
    settings = getattr(request.module, "SERVER_SETTINGS", {})
    workdir = tmp_path_factory.mktemp(f"providers-{request.param}")
    with serve_providers(workdir, redis_url=redis_url, **settings) as instance:
        yield instance


@pytest.fixture
async def api(server: ProviderServer) -> AsyncIterator[Api[ProviderServer]]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(client, server)
