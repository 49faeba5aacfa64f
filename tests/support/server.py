"""Serve ``tests.support.host:app`` with real uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from tests.support.databases import database, sqlite_url

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0
# Small, so that the 413 test needs no big upload; every other body of the REST tests is far
# below it.
BODY_LIMIT = 4096
# A dropped connection's workers are cleaned up after this (the default 10 s would make the
# tests of that cleanup slow).
RECONNECT_GRACE = {"ZNDRAW_JOBLIB_WORKER_RECONNECT_GRACE_SECONDS": "0.2"}
# A uvicorn process stalled for longer than its keep-alive timeout (5 s by default; a loaded
# CI machine did) can close, on waking, a kept-alive connection whose next request is
# already waiting: the keep-alive timer fires before the request is read, and the client
# reads a reset. The tests count every answer, so the timeout is longer than any stall they
# should survive.
KEEP_ALIVE_SECONDS = 120
# Every server started in this test process, in order: a failed test's report shows the
# logs of those it may have talked to (see tests.support.fixtures).
STARTED: list[ServerProcess] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One uvicorn process. ``base`` is the joblib mount URL, ``origin`` the host's."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        mount: str = "/v1/joblib",
        port: int | None = None,
        app: str = "tests.support.host:app",
        log_path: Path | None = None,
        graceful_shutdown: float | None = 2.0,
    ) -> None:
        self.port = port or free_port()
        self.mount = mount
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base = self.origin + mount
        self.app = app
        self.env = {**os.environ, **env, "JOBLIB_TEST_MOUNT": mount, "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        # ``None`` runs plain uvicorn, which waits for every open request on shutdown.
        self.graceful_shutdown = graceful_shutdown

    def start(self) -> ServerProcess:
        graceful = (
            []
            if self.graceful_shutdown is None
            else ["--timeout-graceful-shutdown", f"{self.graceful_shutdown:g}"]
        )
        # The child writes to its own copy of the descriptor: the parent's is closed at once.
        with open(self.log_path, "ab") if self.log_path else open(os.devnull, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    self.app,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *graceful,
                    "--timeout-keep-alive",
                    str(KEEP_ALIVE_SECONDS),
                    "--log-level",
                    "warning",
                ],
                env=self.env,
                cwd=str(ROOT),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        STARTED.append(self)
        try:
            self.wait_ready()
        except BaseException:
            # Never leave a server that did not start running (on a busy machine it would
            # start later, orphaned, and load the machine further).
            self.stop(signal.SIGKILL)
            raise
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(self.origin + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server on port {self.port} not ready in {timeout} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` of the server's log ("" without a log file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sqlite_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test host on a SQLite file in ``workdir``, plus ``extra``."""
    return {"JOBLIB_TEST_DATABASE_URL": sqlite_url(workdir), **extra}


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of the REST tests' host: ``database_url`` and a small body limit."""
    return {
        "JOBLIB_TEST_DATABASE_URL": database_url,
        "ZNDRAW_JOBLIB_MAX_REQUEST_BODY_BYTES": str(BODY_LIMIT),
        **extra,
    }


@contextlib.contextmanager
def serve(
    kind: str, workdir: Path, *, mount: str = "/v1/joblib", **extra_env: str
) -> Iterator[ServerProcess]:
    """A uvicorn server of the test host on a fresh database of ``kind``."""
    with (
        database(kind, workdir) as url,
        ServerProcess(
            server_env(url, **extra_env), mount=mount, log_path=workdir / "server.log"
        ) as server,
    ):
        yield server


def start_internal_server(
    env: Mapping[str, str], workdir: Path, name: str = "server"
) -> ServerProcess:
    """A started server with the internal test extensions registered."""
    return ServerProcess(
        {"JOBLIB_TEST_INTERNAL": "1", **env}, log_path=workdir / f"{name}.log"
    ).start()
