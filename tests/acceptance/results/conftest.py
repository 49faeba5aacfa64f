"""One server per database for the results, progress and cancellation tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.api import Api
from tests.support.databases import DATABASES
from tests.support.server import ServerProcess, serve

# Small limits, so the 413 test needs no big upload: results of up to 8 KiB are accepted
# although the ordinary body limit of these servers is 4 KiB (``BODY_LIMIT``).
RESULT_LIMIT = 8192


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"results-{request.param}")
    with serve(
        request.param, workdir, ZNDRAW_JOBLIB_MAX_TASK_RESULT_BYTES=str(RESULT_LIMIT)
    ) as instance:
        yield instance


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(client, server)
