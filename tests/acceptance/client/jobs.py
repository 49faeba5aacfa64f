"""Extensions and providers the test workers serve (imported by tests and worker scripts)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from joblib_app.client import Category, Extension, Provider, current_task


class Echo(Extension):
    """Succeeds when the registered ``run_kwargs`` arrived; proves a task ran."""

    category: ClassVar[str] = Category.MODIFIER.value
    text: str = "hi"

    def run(self, vis: Any, **kwargs: Any) -> str:
        if kwargs.get("greeting") != "hello":
            raise RuntimeError(f"run_kwargs missing: {kwargs!r}")
        return self.text


class Boom(Extension):
    """Always raises with ``message``."""

    category: ClassVar[str] = Category.ANALYSIS.value
    message: str = "kaboom"

    def run(self, vis: Any, **kwargs: Any) -> None:
        raise ValueError(self.message)


class Gate(Extension):
    """Signals it started (a file), then holds until the test releases it (another file).

    Lets a test act while a task is provably in flight.
    """

    category: ClassVar[str] = Category.SELECTION.value
    started_path: str
    release_path: str
    timeout: float = 30.0

    def run(self, vis: Any, **kwargs: Any) -> None:
        Path(self.started_path).write_text("started")
        deadline = time.monotonic() + self.timeout
        while not Path(self.release_path).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            time.sleep(0.01)


class Compute(Extension):
    """Returns a result built from its payload (``size`` pads it to about that many bytes)."""

    category: ClassVar[str] = Category.ANALYSIS.value
    value: int = 1
    size: int = 0

    def run(self, vis: Any, **kwargs: Any) -> dict[str, Any]:
        return {"square": self.value * self.value, "pad": "x" * self.size}


class Slow(Extension):
    """Runs up to ``seconds``, reporting progress every ``interval`` s; returns early, with
    ``{"stopped": true}``, once its task is cancelled. Writes ``started_path`` first, and
    the wall-clock time it stopped to ``stopped_path``."""

    category: ClassVar[str] = Category.ANALYSIS.value
    seconds: float = 30.0
    interval: float = 0.2
    started_path: str = ""
    stopped_path: str = ""

    def run(self, vis: Any, **kwargs: Any) -> dict[str, Any]:
        task = current_task()
        assert task is not None
        if self.started_path:
            Path(self.started_path).write_text("started")
        began = time.monotonic()
        step = 0
        while time.monotonic() - began < self.seconds:
            step += 1
            task.report_progress(
                min(1.0, (time.monotonic() - began) / self.seconds), f"step {step}"
            )
            if task.cancelled.wait(self.interval):
                if self.stopped_path:
                    Path(self.stopped_path).write_text(repr(time.time()))
                return {"stopped": True, "steps": step}
        return {"stopped": False, "steps": step}


class FileBytes(Provider):
    """Raw bytes of a file below the handler directory."""

    category: ClassVar[str] = "files"
    content_type: ClassVar[str] = "application/octet-stream"
    path: str

    def read(self, handler: Path) -> bytes:
        return (handler / self.path).read_bytes()


class FileNames(Provider):
    """JSON list of the handler directory's file names, optionally filtered by suffix."""

    category: ClassVar[str] = "files"
    suffix: str = ""

    def read(self, handler: Path) -> list[str]:
        return sorted(p.name for p in handler.iterdir() if p.name.endswith(self.suffix))


JOBS: dict[str, type[Extension]] = {
    "Echo": Echo,
    "Boom": Boom,
    "Gate": Gate,
    "Compute": Compute,
    "Slow": Slow,
}
