"""Submit -> execution-start latency of an auto-serve worker, with and without Socket.IO.

Starts ``examples/host_app.py`` under uvicorn (embedded SQLite in a temporary directory),
runs a :class:`JobManager` worker in this process and submits tasks one at a time from a
separate HTTP client. Latency is measured from just before the submit request to the moment
the worker's ``execute`` callback is entered (same clock, same process).

    python bench/worker_latency.py [--tasks 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx

from joblib_app.client import ClaimedTask, Extension, JobManager

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "user-token"
ROOM = "bench"


class Noop(Extension):
    """Does nothing: the benchmark measures the way to it."""

    category: ClassVar[str] = "modifiers"
    n: int = 0

    def run(self, vis: Any, **kwargs: Any) -> None:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "JOBLIB_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
    }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "examples.host_app:app",
            "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--timeout-graceful-shutdown", "2",
        ],
        cwd=REPO_ROOT,
        env=env,
    )  # fmt: skip
    origin = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            if httpx.get(origin + "/health", timeout=1).status_code == 200:
                return process, origin + "/v1/joblib"
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise TimeoutError("server not ready after 30 s")


def measure(base: str, *, use_socketio: bool, tasks: int, warmup: int) -> list[float]:
    """Latencies in milliseconds of ``tasks`` sequential submissions."""
    started: dict[str, float] = {}
    arrived = threading.Condition()

    def execute(task: ClaimedTask) -> None:
        now = time.perf_counter()
        with arrived:
            started[task.task_id] = now
            arrived.notify_all()

    latencies: list[float] = []
    with (
        JobManager(base, token=TOKEN, execute=execute, use_socketio=use_socketio) as worker,
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as http,
    ):
        worker.register(Noop, room=ROOM)
        job = f"{ROOM}:modifiers:Noop"
        for i in range(warmup + tasks):
            began = time.perf_counter()
            answer = http.post(f"/rooms/{ROOM}/tasks/{job}", json={"payload": {"n": i}})
            answer.raise_for_status()
            task_id = answer.json()["id"]
            with arrived:
                if not arrived.wait_for(lambda tid=task_id: tid in started, timeout=10):
                    raise TimeoutError(f"task {task_id} never started")
            if i >= warmup:
                latencies.append((started[task_id] - began) * 1000)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_server(Path(tmp))
        try:
            print(f"{'mode':<12}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}{'max ms':>10}")
            for label, use_socketio in (("socketio", True), ("long-poll", False)):
                values = measure(
                    base, use_socketio=use_socketio, tasks=args.tasks, warmup=args.warmup
                )
                print(
                    f"{label:<12}{len(values):>6}{percentile(values, 0.5):>10.2f}"
                    f"{percentile(values, 0.95):>10.2f}{statistics.fmean(values):>10.2f}"
                    f"{max(values):>10.2f}"
                )
        finally:
            process.terminate()
            process.wait(15)


if __name__ == "__main__":
    main()
