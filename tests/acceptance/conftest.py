"""Fixtures of the REST acceptance tests: one server per module and database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.api import Api
from tests.support.databases import DATABASES
from tests.support.server import ServerProcess, serve


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The test host under uvicorn on a fresh SQLite file or PostgreSQL database.

    A module may set ``MOUNT`` to serve the app at another path.
    """
    mount = getattr(request.module, "MOUNT", "/v1/joblib")
    with serve(request.param, tmp_path_factory.mktemp(request.param), mount=mount) as instance:
        yield instance


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(client, server)
