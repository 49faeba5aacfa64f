"""Servers of the real-time acceptance tests (``tests/support/host.py`` under uvicorn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

# Two mount paths: Socket.IO and every route must work wherever the host mounts the app.
MOUNTS = ["/v1/joblib", "/api/x/jobs"]


# A dropped connection's workers are cleaned up after this (the default 10 s would make
# the tests of that cleanup slow).
RECONNECT_GRACE = {"ZNDRAW_JOBLIB_WORKER_RECONNECT_GRACE_SECONDS": "0.2"}


def sqlite_env(workdir: Path, **extra: str) -> dict[str, str]:
    return {
        "JOBLIB_TEST_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'joblib.db'}",
        **RECONNECT_GRACE,
        **extra,
    }


@pytest.fixture(scope="module", params=MOUNTS, ids=["v1-joblib", "api-x-jobs"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One SQLite server per mount path, shared by a module's tests (each uses its own rooms)."""
    workdir = tmp_path_factory.mktemp("realtime")
    env = sqlite_env(workdir, JOBLIB_TEST_READ_GUARD="1")
    with ServerProcess(env, mount=request.param, log_path=workdir / "server.log") as instance:
        yield instance
