"""Throughput of ``@internal`` tasks: taskiq over Redis with one ``taskiq worker`` process.

Run from the repository root with Redis on 127.0.0.1:6379::

    python bench/internal_throughput.py [--tasks 500] [--concurrency 20]

It serves ``tests.support.host:app`` with uvicorn (SQLite, Redis notifier, ``ListQueueBroker``),
starts one ``taskiq worker`` running ``tests/support/internal_worker_app.py`` (reports over REST),
submits trivial tasks from ``--concurrency`` clients and measures submit-to-all-completed.
For scale, it also measures the same server's in-process ``InMemoryBroker`` mode and a
baseline in the same run: requests per second to a trivial host endpoint (``/health``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import TaskiqWorker
from tests.support.server import ServerProcess

REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN = {"Authorization": "Bearer admin"}
USER = {"Authorization": "Bearer user:bench"}
JOB = "@internal:analysis:Greet"


async def requests_per_second(origin: str, count: int, concurrency: int) -> float:
    """Baseline: GET /health on the host, ``concurrency`` requests in flight."""
    async with httpx.AsyncClient(base_url=origin, timeout=30) as http:
        queue = list(range(count))

        async def client() -> None:
            while queue:
                queue.pop()
                (await http.get("/health")).raise_for_status()

        await http.get("/health")
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return count / (time.perf_counter() - start)


async def tasks_per_second(base: str, count: int, concurrency: int) -> float:
    """Submit ``count`` tasks from ``concurrency`` clients; tasks/s until all completed."""
    room = f"bench{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        ids: list[str] = []
        queue = list(range(count))

        async def submitter() -> None:
            while queue:
                i = queue.pop()
                response = await http.post(
                    f"/rooms/{room}/tasks/{JOB}", json={"payload": {"name": str(i)}}, headers=USER
                )
                response.raise_for_status()
                ids.append(response.json()["id"])

        async def wait(task_id: str) -> str:
            while True:
                response = await http.get(
                    f"/tasks/{task_id}", headers={**ADMIN, "Prefer": "wait=30"}
                )
                status = response.json()["status"]
                if status in ("completed", "failed", "cancelled"):
                    return status

        start = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        submitted = time.perf_counter()
        semaphore = asyncio.Semaphore(concurrency)

        async def bounded(task_id: str) -> str:
            async with semaphore:
                return await wait(task_id)

        statuses = await asyncio.gather(*(bounded(i) for i in ids))
        elapsed = time.perf_counter() - start
    failed = [s for s in statuses if s != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} task(s) did not complete: {set(failed)}")
    print(f"    submitted {count} in {submitted - start:.2f} s, all completed in {elapsed:.2f} s")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    prefix = f"joblibbench:{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base_env = {
            "JOBLIB_TEST_INTERNAL": "1",
            "JOBLIB_TEST_REDIS_URL": REDIS_URL,
            "JOBLIB_TEST_REDIS_PREFIX": prefix,
        }
        redis_env = {
            **base_env,
            "JOBLIB_TEST_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'redis.db'}",
            "JOBLIB_TEST_BROKER_REDIS": REDIS_URL,
        }
        memory_env = {
            **base_env,
            "JOBLIB_TEST_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'memory.db'}",
        }
        try:
            with ServerProcess(redis_env, log_path=workdir / "server.log") as server:
                worker = TaskiqWorker(server, REDIS_URL, prefix, workdir / "worker.log")
                try:
                    baseline = asyncio.run(
                        requests_per_second(server.origin, args.tasks, args.concurrency)
                    )
                    print(f"baseline GET /health:                  {baseline:8.1f} req/s")
                    print("Redis broker, 1 taskiq worker process:")
                    remote = asyncio.run(
                        tasks_per_second(server.base, args.tasks, args.concurrency)
                    )
                    print(f"    {remote:8.1f} tasks/s  ({remote / baseline:.3f} x baseline)")
                finally:
                    worker.stop()
            with ServerProcess(memory_env, log_path=workdir / "server-memory.log") as server:
                print("InMemoryBroker, in the server process:")
                local = asyncio.run(tasks_per_second(server.base, args.tasks, args.concurrency))
                print(f"    {local:8.1f} tasks/s  ({local / baseline:.3f} x baseline)")
        finally:
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
            client.close()


if __name__ == "__main__":
    main()
