"""The API in process over httpx's ``ASGITransport``: one app per module and database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.api import Api
from tests.support.databases import DATABASES, database
from tests.support.in_process import InProcess, serve_in_process
from tests.support.server import server_env


@pytest.fixture(scope="module", params=DATABASES)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh SQLite file or PostgreSQL database for the module."""
    workdir: Path = tmp_path_factory.mktemp(request.param)
    with database(request.param, workdir) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[InProcess]:
    """The test host in process, configured as the REST acceptance servers are.

    A module may set ``MOUNT`` to serve the app at another path.
    """
    mount = getattr(request.module, "MOUNT", "/v1/joblib")
    async with serve_in_process(server_env(database_url), mount) as app:
        yield app


@pytest.fixture
def api(server: InProcess) -> Api[InProcess]:
    return Api(server.client, server)
