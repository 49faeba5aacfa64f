"""Servers of the real-time acceptance tests (``tests/support/host.py`` under uvicorn)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import RECONNECT_GRACE, ServerProcess, sqlite_env

# Two mount paths: Socket.IO and every route must work wherever the host mounts the app.
MOUNTS = ["/v1/joblib", "/api/x/jobs"]


@pytest.fixture(scope="module", params=MOUNTS, ids=["v1-joblib", "api-x-jobs"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One SQLite server per mount path, shared by a module's tests (each uses its own rooms)."""
    workdir = tmp_path_factory.mktemp("realtime")
    env = sqlite_env(workdir, JOBLIB_TEST_READ_GUARD="1", **RECONNECT_GRACE)
    with ServerProcess(env, mount=request.param, log_path=workdir / "server.log") as instance:
        yield instance
