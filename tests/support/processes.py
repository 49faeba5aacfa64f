"""Processes the acceptance tests start besides servers: killable workers, ``taskiq worker``
processes (also used by the benchmark) and a throwaway ``redis-server``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.support.server import ROOT, ServerProcess, free_port

WORKER_SCRIPT = Path(__file__).with_name("worker_proc.py")


class TaskiqWorker:
    """``python -m taskiq worker tests.support.internal_worker_app:broker`` in its own session.

    taskiq's main process supervises child processes; the session lets ``kill()`` reach
    the child that runs the task, not only the supervisor.
    """

    def __init__(self, server: ServerProcess, redis_url: str, prefix: str, log: Path) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "JOBLIB_TEST_BROKER_REDIS": redis_url,
            "JOBLIB_TEST_REDIS_PREFIX": prefix,
            "JOBLIB_TEST_WORKER_BASE_URL": server.base,
        }
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "taskiq",
                    "worker",
                    "tests.support.internal_worker_app:broker",
                    "--workers",
                    "1",
                    "--shutdown-timeout",
                    "2",
                ],
                cwd=str(ROOT),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (supervisor and task-running child)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL what is left of the group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        # The supervisor may be gone while a child lingers; a vanished group is fine.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


class WorkerProcess:
    """``worker_proc.py`` in a subprocess: a worker that registered a job and holds a
    running task, then waits to be killed. ``mode`` is ``http`` (no Socket.IO at all) or
    ``socketio`` (it also joined its job room, so the server remembers it on the socket).
    """

    def __init__(self, server: ServerProcess, room_id: str, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), server.base, room_id, mode],
            cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, str] = {}

    async def ready(self, within: float = 20.0) -> dict[str, str]:
        """Worker id, job and task id, once the task is running."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), within)
        assert line, f"worker process exited with {self.process.poll()}"
        self.info = json.loads(line)
        return self.info

    def kill(self) -> None:
        """SIGKILL: no goodbye, no DELETE /workers, no Socket.IO disconnect packet."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=5)

    def close(self) -> None:
        """Kill the process if it still runs and close its pipes."""
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class RedisServer:
    """A throwaway ``redis-server`` on a port of its own, to stop and restart in a test."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """Stop at once (SIGKILL): clients see the connection drop, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
