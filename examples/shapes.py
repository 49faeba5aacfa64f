"""Example extensions, shared by the worker and the submitting scripts."""

import math
from typing import Any, ClassVar

from joblib_app.client import Category, Extension, current_task


class Rotate(Extension):
    """Rotate a 2-D point about the origin."""

    category: ClassVar[str] = Category.MODIFIER.value
    x: float = 1.0
    y: float = 0.0
    angle: float = 90.0

    def run(self, vis: Any, **kwargs: Any) -> tuple[float, float]:
        rad = math.radians(self.angle)
        return (
            self.x * math.cos(rad) - self.y * math.sin(rad),
            self.x * math.sin(rad) + self.y * math.cos(rad),
        )


class Stats(Extension):
    """Mean and spread of a list of numbers."""

    category: ClassVar[str] = Category.ANALYSIS.value
    values: list[float] = [1.0, 2.0, 3.0]

    def run(self, vis: Any, **kwargs: Any) -> dict[str, float]:
        if not self.values:
            raise ValueError("Stats needs at least one value")
        mean = sum(self.values) / len(self.values)
        spread = max(self.values) - min(self.values)
        return {"mean": mean, "spread": spread, **kwargs}


class Countdown(Extension):
    """Count down ``seconds``, reporting progress each ``step``; stop early when cancelled."""

    category: ClassVar[str] = Category.ANALYSIS.value
    seconds: int = 10
    step: float = 1.0

    def run(self, vis: Any, **kwargs: Any) -> dict[str, Any]:
        task = current_task()
        if task is None:
            raise RuntimeError("Countdown runs under a JobManager")
        ticks = max(1, round(self.seconds / self.step))
        for tick in range(ticks):
            task.report_progress(tick / ticks, f"{ticks - tick} left")
            # Wakes at once when the task is cancelled (Socket.IO, or a progress answer).
            if task.cancelled.wait(self.step):
                return {"cancelled_at": tick}
        return {"ticks": ticks}
