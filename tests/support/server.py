"""Serve ``tests.support.host:app`` with real uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        graceful = (
            []
            if self.graceful_shutdown is None
            else ["--timeout-graceful-shutdown", f"{self.graceful_shutdown:g}"]
        )
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
                "--log-level",
                "warning",
            ],
            env=self.env,
            cwd=str(ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
