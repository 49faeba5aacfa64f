"""Benchmark: task results and progress reports.

Starts the test host (``tests/support/host.py``, one uvicorn process) on SQLite, then on a fresh
PostgreSQL database it creates and drops, and measures:

* ``round trip``: for results of 1 KB, 100 KB and 1 MB (compact JSON), the time from the
  worker's ``PATCH completed`` with the result to the submitter holding it: the PATCH,
  then ``GET /tasks/{id}`` (what a long-poll answers once it wakes). Median and p95 over
  ``--repeats`` tasks, one at a time, with the bench's raw keep-alive client.
* ``progress``: P loops each reporting progress on its own running task as fast as the
  server answers (``PATCH running`` with ``progress``/``progress_message``), next to C
  task-cycle loops (submit, claim, running, completed), against the cycle alone: progress
  updates/s sustained, and what they cost the cycle.

Run: ``python -m bench.results [--databases sqlite postgres] [--duration 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rawhttp import RawConnection  # noqa: E402
from tests.support.databases import postgres_database  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

TOKEN = "user:bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MOUNT = "/v1/joblib"
SIZES = {"1 KB": 1_000, "100 KB": 100_000, "1 MB": 1_000_000}


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        return
    with postgres_database() as url:
        yield url


async def call(conn: RawConnection, method: str, path: str, body: object = None) -> dict:
    status, answer = await conn.request(method, MOUNT + path, body)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {answer}")
    return answer


async def setup(conn: RawConnection, room: str, workers: int) -> tuple[str, list[str]]:
    ids = [(await call(conn, "POST", "/workers"))["id"] for _ in range(workers)]
    job = None
    for worker_id in ids:
        body = {"category": "modifiers", "name": "Bench", "schema": {}, "worker_id": worker_id}
        job = (await call(conn, "PUT", f"/rooms/{room}/jobs", body))["full_name"]
    assert job is not None
    return job, ids


async def running_task(conn: RawConnection, room: str, job: str, worker_id: str) -> str:
    task = await call(conn, "POST", f"/rooms/{room}/tasks/{job}", {"payload": {}})
    claimed = (await call(conn, "POST", "/tasks/claim", {"worker_id": worker_id}))["task"]
    assert claimed is not None and claimed["id"] == task["id"], "one worker, one queue"
    await call(conn, "PATCH", f"/tasks/{task['id']}", {"status": "running"})
    return task["id"]


async def round_trips(origin: str, repeats: int) -> dict[str, tuple[float, float]]:
    conn = await RawConnection(origin, AUTH).open()
    try:
        room = f"b{uuid.uuid4().hex[:10]}"
        job, (worker_id,) = await setup(conn, room, 1)
        figures = {}
        for label, size in SIZES.items():
            result = {"data": "x" * (size - 11)}  # {"data":"..."} is size bytes
            times = []
            for _ in range(repeats):
                task_id = await running_task(conn, room, job, worker_id)
                began = time.perf_counter()
                body = {"status": "completed", "result": result}
                await call(conn, "PATCH", f"/tasks/{task_id}", body)
                read = await call(conn, "GET", f"/tasks/{task_id}")
                times.append(time.perf_counter() - began)
                assert read["result"] == result
            times.sort()
            figures[label] = (statistics.median(times), times[int(len(times) * 0.95) - 1])
        return figures
    finally:
        await conn.close()


async def cycle_loop(conn: RawConnection, room: str, job: str, worker: str, end: float) -> int:
    done = 0
    while time.monotonic() < end:
        await call(conn, "POST", f"/rooms/{room}/tasks/{job}", {"payload": {}})
        task = (await call(conn, "POST", "/tasks/claim", {"worker_id": worker}))["task"]
        if task is None:
            continue
        for status in ("running", "completed"):
            await call(conn, "PATCH", f"/tasks/{task['id']}", {"status": status})
        done += 1
    return done


async def progress_loop(conn: RawConnection, task_id: str, end: float) -> int:
    done = 0
    while time.monotonic() < end:
        done += 1
        body = {"status": "running", "progress": (done % 100) / 100, "progress_message": "x"}
        await call(conn, "PATCH", f"/tasks/{task_id}", body)
    return done


async def progress_next_to_cycle(
    origin: str, cycles: int, reporters: int, duration: float
) -> dict[str, float]:
    conns = [await RawConnection(origin, AUTH).open() for _ in range(cycles + reporters)]
    try:
        cycle_room, progress_room = (f"b{uuid.uuid4().hex[:10]}" for _ in range(2))
        cycle_job, cycle_workers = await setup(conns[0], cycle_room, cycles)
        progress_job, progress_workers = await setup(conns[0], progress_room, reporters)
        tasks = [
            await running_task(conns[0], progress_room, progress_job, w) for w in progress_workers
        ]
        pairs = list(zip(conns[:cycles], cycle_workers, strict=True))
        reports = list(zip(conns[cycles:], tasks, strict=True))
        end = time.monotonic() + duration
        alone = await asyncio.gather(
            *(cycle_loop(c, cycle_room, cycle_job, w, end) for c, w in pairs)
        )
        end = time.monotonic() + duration
        together = await asyncio.gather(
            *(cycle_loop(c, cycle_room, cycle_job, w, end) for c, w in pairs),
            *(progress_loop(c, t, end) for c, t in reports),
        )
        return {
            "cycle alone tasks/s": sum(alone) / duration,
            "cycle next to progress tasks/s": sum(together[:cycles]) / duration,
            "progress updates/s": sum(together[cycles:]) / duration,
        }
    finally:
        for conn in conns:
            await conn.close()


def bench(kind: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
        env = {"JOBLIB_TEST_DATABASE_URL": url, "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": "3600"}
        with ServerProcess(env, mount=MOUNT) as server:
            trips = asyncio.run(round_trips(server.origin, args.repeats))
            print(f"{kind}: result round trip (PATCH completed + GET), median / p95")
            for label, (median, p95) in trips.items():
                print(f"  {label:>7}: {median * 1000:7.2f} ms / {p95 * 1000:7.2f} ms")
            figures = asyncio.run(
                progress_next_to_cycle(server.origin, args.cycles, args.reporters, args.duration)
            )
            print(f"{kind}: {args.reporters} progress loops next to {args.cycles} cycle loops")
            for label, value in figures.items():
                print(f"  {label}: {value:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--cycles", type=int, default=4, help="task-cycle loops")
    parser.add_argument("--reporters", type=int, default=4, help="progress loops")
    args = parser.parse_args()
    for kind in args.databases:
        bench(kind, args)


if __name__ == "__main__":
    main()
