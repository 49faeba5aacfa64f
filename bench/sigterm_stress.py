"""SIGTERM to an SDK worker while tasks flow, repeated (issue 13, "the SDK's stop").

Starts ``tests/support/host.py`` under uvicorn (SQLite in a temporary directory). Each round starts
a worker process (``tests.acceptance.client.worker_main``, auto-serve, Socket.IO on), keeps a
queue of ``Echo`` tasks in front of it from a submitting thread, sends SIGTERM at a random moment
once tasks flow, and measures how long until the signal handler ran (the worker's
"Received SIGTERM" line) and until the process exited. After every round the tasks left
are served by a fresh worker, so every task must end ``completed``: none failed, none
stuck, none run twice.

    python -m bench.sigterm_stress [--rounds 50]
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.acceptance.client.processes import WorkerProcess
from tests.support.server import ServerProcess

TOKEN = "user:alice"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


class _PatientServer(ServerProcess):
    """A busy machine starts uvicorn slowly: wait longer than the tests do."""

    def wait_ready(self, timeout: float = 180.0) -> None:
        super().wait_ready(timeout)


def _submitter(base: str, room: str, stop: threading.Event, ids: list[str]) -> None:
    """Keep a few tasks queued until ``stop``."""
    job = f"{room}:modifiers:Echo"
    with httpx.Client(base_url=base, headers=HEADERS, timeout=30) as http:
        while not stop.is_set():
            pending = http.get(f"/rooms/{room}/tasks", params={"status": "pending"}).json()
            if pending.get("total", 0) < 3:
                answer = http.post(f"/rooms/{room}/tasks/{job}", json={"payload": {}})
                if answer.status_code == 202:
                    ids.append(answer.json()["id"])
            else:
                stop.wait(0.005)


def _round(server: ServerProcess, rng: random.Random) -> dict[str, float | int]:
    room = f"r{uuid.uuid4().hex[:10]}"
    worker = WorkerProcess("--url", server.base, "--room", room, "--jobs", "Echo")
    worker.ready(120)
    stop = threading.Event()
    ids: list[str] = []
    feeder = threading.Thread(target=_submitter, args=(server.base, room, stop, ids))
    feeder.start()
    try:
        _wait_first_completed(server.base, ids, 120)
        time.sleep(rng.uniform(0.0, 0.3))  # a random moment of the flow
        sent = time.monotonic()
        worker.signal(signal.SIGTERM)
        handled = _line_time(worker, "Received SIGTERM", sent, 30)
        worker.wait(60)
        exited = time.monotonic() - sent
    finally:
        stop.set()
        feeder.join()
        worker.close()
    # Whatever is left is served by a fresh worker; then every task must be completed.
    drain = WorkerProcess("--url", server.base, "--room", room, "--jobs", "Echo")
    try:
        drain.ready(120)
        statuses = _wait_all_terminal(server.base, ids, 60)
    finally:
        drain.signal(signal.SIGTERM)
        drain.wait(30)
        drain.close()
    failed = [s for s in statuses.values() if s != "completed"]
    for task_id, status in statuses.items():
        if status != "completed":
            print(f"  task {task_id}: {status}", flush=True)
    return {
        "handled": handled,
        "exited": exited,
        "tasks": len(ids),
        "not_completed": len(failed),
    }


def _wait_first_completed(base: str, ids: list[str], timeout: float) -> None:
    """Return once the worker has completed a task: tasks flow."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, headers=HEADERS, timeout=30) as http:
        while time.monotonic() < deadline:
            if ids and http.get(f"/tasks/{ids[0]}").json()["status"] == "completed":
                return
            time.sleep(0.01)
    raise TimeoutError("no task completed")


def _line_time(worker: WorkerProcess, text: str, since: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in worker.lines):
            return time.monotonic() - since
        time.sleep(0.005)
    return float("inf")


def _wait_all_terminal(base: str, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    with httpx.Client(base_url=base, headers=HEADERS, timeout=30) as http:
        for task_id in ids:
            while True:
                task = http.get(f"/tasks/{task_id}").json()
                status = task["status"]
                if status in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
                    statuses[task_id] = status if status == "completed" else f"{status} {task}"
                    break
                time.sleep(0.02)
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "JOBLIB_TEST_DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'joblib.db'}",
            "ZNDRAW_JOBLIB_WORKER_RECONNECT_GRACE_SECONDS": "1",
        }
        server = _PatientServer(env, log_path=Path(tmp) / "server.log")
        server.start()
        try:
            results = []
            for number in range(1, args.rounds + 1):
                result = _round(server, rng)
                results.append(result)
                print(
                    f"round {number:3d}: handler {result['handled']:.3f} s, exit "
                    f"{result['exited']:.3f} s, {result['tasks']} task(s), "
                    f"{result['not_completed']} not completed",
                    flush=True,
                )
        finally:
            server.stop()
    handled = [float(r["handled"]) for r in results]
    exited = [float(r["exited"]) for r in results]
    tasks = sum(int(r["tasks"]) for r in results)
    bad = sum(int(r["not_completed"]) for r in results)
    print(
        f"\n{len(results)} rounds, {tasks} tasks: signal handled within 1 s in "
        f"{sum(h < 1.0 for h in handled)}/{len(handled)} (max {max(handled):.3f} s, "
        f"median {statistics.median(handled):.3f} s); exit median "
        f"{statistics.median(exited):.3f} s, max {max(exited):.3f} s; "
        f"tasks not completed: {bad}"
    )
    return 0 if bad == 0 and max(handled) < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
