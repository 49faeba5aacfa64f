"""The ``@internal`` extensions of the tests, and the Redis broker the tests use.

Imported by ``tests/support/host.py`` (server side, ``JOBLIB_TEST_INTERNAL=1``) and by
``tests/support/internal_worker_app.py`` (standalone ``taskiq worker``), so both register the
same task names.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from taskiq import AsyncBroker

from joblib_app import Extension, RedisListBroker


class Greet(Extension):
    """Succeeds; writes its greeting to ``out`` when given, proving ``run()`` ran."""

    category = "analysis"
    name: str = "world"
    out: str | None = None

    def run(self, vis: Any, **kwargs: Any) -> str:
        text = f"hello {self.name}"
        if self.out is not None:
            Path(self.out).write_text(text)
        return text


class Explode(Extension):
    """Always raises, so the executor must report the task failed with this text."""

    category = "modifiers"
    message: str = "boom"

    def run(self, vis: Any, **kwargs: Any) -> None:
        raise RuntimeError(self.message)


class WaitForFile(Extension):
    """Blocks until ``path`` exists (a test creates it, or kills the worker meanwhile)."""

    category = "modifiers"
    path: str
    timeout: float = 60.0

    def run(self, vis: Any, **kwargs: Any) -> None:
        deadline = time.monotonic() + self.timeout
        target = Path(self.path)
        # run() executes in a worker thread with no event to wait on: poll the filesystem.
        while not target.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path} did not appear within {self.timeout:g} s")
            time.sleep(0.02)


class Sleep(Extension):
    """Runs for ``seconds``: longer than redis-py 8's 5 s default socket timeout."""

    category = "analysis"
    seconds: float = 1.0

    def run(self, vis: Any, **kwargs: Any) -> float:
        time.sleep(self.seconds)
        return self.seconds


class Answer(Extension):
    """Returns ``{"text": ..., "size": ...}`` with ``size`` characters, or (``opaque``) an
    object that is no JSON data."""

    category = "analysis"
    size: int = 3
    opaque: bool = False

    def run(self, vis: Any, **kwargs: Any) -> object:
        if self.opaque:
            return object()
        return {"text": "x" * self.size, "size": self.size}


# Literal, not derived with internal_job_name: the tests check the naming rule itself.
GREET = "@internal:analysis:Greet"
EXPLODE = "@internal:modifiers:Explode"
WAIT = "@internal:modifiers:WaitForFile"
SLEEP = "@internal:analysis:Sleep"
ANSWER = "@internal:analysis:Answer"

INTERNAL_EXTENSIONS: list[type[Extension]] = [Greet, Explode, WaitForFile, Sleep, Answer]


def internal_queue_name(prefix: str) -> str:
    """The Redis list of the internal tasks, under the test's own key prefix."""
    return f"{prefix}internal-tasks"


def make_redis_broker(url: str, prefix: str) -> AsyncBroker:
    """The package's ``RedisListBroker`` whose queue lives under ``prefix``.

    A list queue rather than RedisStreamBroker: its worker stops promptly on SIGTERM,
    and it needs no consumer group to exist before a task is kicked. It has no
    acknowledgements; a task lost with a killed worker is failed by the sweeper's
    internal timeout.
    """
    return RedisListBroker(url, queue_name=internal_queue_name(prefix))
