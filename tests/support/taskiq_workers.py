"""A standalone ``taskiq worker`` process for the internal-job tests and the benchmark."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.server import ROOT, ServerProcess


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
