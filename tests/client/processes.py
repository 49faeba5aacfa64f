"""Subprocess helpers for the client tests: a uvicorn server and worker scripts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
MOUNT = "/v1/joblib"
T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.02, what: str = ""
) -> T:
    """Return the first truthy value of ``predicate()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ServerProcess:
    """``uvicorn <app>`` on a loopback port, restartable on the same port and database."""

    def __init__(self, app: str, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.port = free_port()
        self.workdir = workdir
        self.env = child_env(env)
        self.log_path = workdir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + MOUNT

    def start(self, timeout: float = 20.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", self.app,
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning", "--timeout-graceful-shutdown", "3",
            ],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_until(self._ready, timeout, interval=0.05, what=f"server on {self.port}")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited:\n{self.log()}")
        try:
            answer = httpx.get(
                self.base_url + "/workers",
                headers={"Authorization": "Bearer alice-token"},
                timeout=1.0,
            )
        except httpx.TransportError:
            return False
        return answer.status_code == 200

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class WorkerProcess:
    """``python -m tests.client.worker_main ...`` with its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.client.worker_main", *args],
            cwd=REPO_ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for_line(self, prefix: str, timeout: float = 20.0) -> str:
        """The first output line starting with ``prefix``, waiting for it if needed."""

        def found() -> str | None:
            return next((line for line in self.lines if line.startswith(prefix)), None)

        with self._changed:
            ok = self._changed.wait_for(lambda: found() or self.process.poll() is not None, timeout)
            line = found()
        if not ok or line is None:
            raise AssertionError(f"no line {prefix!r} in worker output:\n{self.output}")
        return line

    def ready(self, timeout: float = 20.0) -> str:
        """Wait for registration; returns the worker id."""
        return self.wait_for_line("READY ", timeout).split()[1]

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
