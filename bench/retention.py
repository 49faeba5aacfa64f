"""Benchmark: the retention sweep of 100,000 old tasks, and the task cycle while it runs.

For each database (SQLite file, fresh PostgreSQL database), the server (``tests/support/host.py``,
one uvicorn process, sweeper every 0.25 s) is started, then 100,000 finished tasks are
written straight into the database, timed to pass the retention age 15 s later.
Meanwhile C workers (default 4, keep-alive raw HTTP, one client process) run the task
cycle (submit, claim, running, completed) without pause. A monitor counts the old tasks
left every 50 ms, which dates the sweep's start and end.

Printed per database: the sweep's time (the monitor's, and the server's own from its log),
the cycle's tasks/s before the sweep (the baseline of the same run), during it, and after
it, and the ratio during/before.

Run: ``python -m bench.retention [--tasks 100000] [--concurrency 4] [--databases ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rawhttp import RawConnection  # noqa: E402
from bench.rest_cycle import AUTH, database, prepare_job  # noqa: E402
from joblib_app.models import task_table, utcnow  # noqa: E402
from tests.acceptance.operator.seed import seed_finished  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

RETENTION = 3600.0
# Seconds between seeding and the old tasks passing the retention age: the server starts
# and the baseline is measured in between.
ELIGIBLE_AFTER = 15.0
TAIL = 2.0


async def cycle(
    server: ServerProcess, room: str, job: str, worker: str, done: list[float], stop: asyncio.Event
) -> None:
    conn = await RawConnection(server.origin, AUTH).open()
    submit_path = f"{server.mount}/rooms/{room}/tasks/{job}"
    try:
        while not stop.is_set():
            status, body = await conn.request("POST", submit_path, {"payload": {}})
            assert status == 202, body
            status, body = await conn.request(
                "POST", f"{server.mount}/tasks/claim", {"worker_id": worker}
            )
            assert status == 200, body
            if body["task"] is None:
                continue
            path = f"{server.mount}/tasks/{body['task']['id']}"
            for target in ("running", "completed"):
                status, body = await conn.request("PATCH", path, {"status": target})
                assert status == 200, body
            done.append(time.monotonic())
    finally:
        await conn.close()


async def monitor(url: str, total: int, marks: dict[str, float], stop: asyncio.Event) -> None:
    engine = create_async_engine(url)
    count = select(func.count()).select_from(task_table).where(task_table.c.room_id == "seed")
    try:
        async with engine.connect() as conn:
            while True:
                left = (await conn.execute(count)).scalar_one()
                await conn.commit()
                now = time.monotonic()
                if left < total and "start" not in marks:
                    marks["start"] = now
                if left == 0:
                    marks["end"] = now
                    await asyncio.sleep(TAIL)
                    stop.set()
                    return
                await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


def rate(done: list[float], start: float, end: float) -> float:
    return sum(start <= t < end for t in done) / (end - start) if end > start else float("nan")


async def bench(kind: str, url: str, workdir: Path, args: argparse.Namespace) -> dict:
    env = {
        "JOBLIB_TEST_DATABASE_URL": url,
        "ZNDRAW_JOBLIB_TASK_RETENTION_SECONDS": str(RETENTION),
        "ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS": "0.25",
        "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": "3600",
    }
    log = workdir / "server.log"
    with ServerProcess(env, log_path=log) as server:
        room, job, workers = prepare_job(server, args.concurrency)
        # Seeded under the running server (its tables exist), to pass the retention age
        # ELIGIBLE_AFTER seconds from now: the seeding and the baseline fit in between.
        finished = utcnow() - timedelta(seconds=RETENTION - ELIGIBLE_AFTER)
        await seed_finished(url, args.tasks, finished)
        done: list[float] = []
        marks: dict[str, float] = {}
        stop = asyncio.Event()
        began = time.monotonic()
        await asyncio.gather(
            monitor(url, args.tasks, marks, stop),
            *(cycle(server, room, job, w, done, stop) for w in workers),
        )
        ended = time.monotonic()
    found = re.search(r"Sweeper deleted (\d+) task\(s\).* in ([\d.]+) s", log.read_text())
    start, end = marks["start"], marks["end"]
    before = rate(done, began + 1.0, start)
    during = rate(done, start, end)
    return {
        "database": kind,
        "sweep_s": end - start,
        "server_sweep_s": float(found.group(2)) if found else float("nan"),
        "deleted": int(found.group(1)) if found else 0,
        "before": before,
        "during": during,
        "after": rate(done, end, ended),
        "ratio": during / before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    for kind in args.databases:
        with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
            row = asyncio.run(bench(kind, url, Path(tmp), args))
        print(
            f"{row['database']:>8}: swept {row['deleted']} tasks in {row['sweep_s']:.2f} s "
            f"(server: {row['server_sweep_s']:.2f} s); cycle C={args.concurrency}: "
            f"{row['before']:.0f} tasks/s before, {row['during']:.0f} during, "
            f"{row['after']:.0f} after; during/before {row['ratio']:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
