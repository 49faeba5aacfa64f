"""Fixtures of the client tests: the mounted app under uvicorn and worker processes.

The server is ``tests/support/server.py`` serving ``tests/support/host.py`` (tokens
``admin`` and ``user:<name>``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from joblib_app.client import JobManager
from tests.acceptance.client.processes import WorkerProcess
from tests.support.server import ServerProcess

ALICE = "user:alice"
# Short timeouts so the sweeper test finishes quickly; every worker here beats every 0.5 s.
FAST_SWEEP = {
    "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": "3",
    "ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS": "0.5",
    "ZNDRAW_JOBLIB_WORKER_RECONNECT_GRACE_SECONDS": "0.5",
}


def make_server(workdir: Path) -> ServerProcess:
    """A server (not started) on its own SQLite file in ``workdir``."""
    env = {"JOBLIB_TEST_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'joblib.db'}", **FAST_SWEEP}
    return ServerProcess(env, log_path=workdir / "server.log")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests that do not stop it."""
    with make_server(tmp_path_factory.mktemp("server")) as instance:
        yield instance


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of this test's own, which it may stop and restart (same port, same file)."""
    with make_server(tmp_path) as instance:
        yield instance


@pytest.fixture
def room() -> str:
    """A fresh room id, so tests sharing the server never see each other's jobs."""
    return f"r{uuid.uuid4().hex[:10]}"


@pytest.fixture
def spawn_worker() -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes; any left running are killed afterwards."""
    started: list[WorkerProcess] = []

    def spawn(*args: str) -> WorkerProcess:
        worker = WorkerProcess(*args)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        worker.close()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[JobManager]:
    """A submitting client (no Socket.IO, no worker) for the shared server."""
    with JobManager(server.base, token=ALICE, use_socketio=False) as manager:
        yield manager
