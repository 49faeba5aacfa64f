"""Benchmark: the task cycle's CPU cost in process, without uvicorn or a client process.

The test host (``tests/support/host.py``: the app mounted at ``/v1/joblib`` in a FastAPI
host) is called through its ASGI entry on one event loop: 16 concurrent loops each submit a
task, claim one, and PATCH it ``running`` then ``completed`` (the ``loop`` mode of
``bench.rest_cycle``), after a batch of ``GET /health`` requests of the same host. Printed
per batch: the process's CPU time per health request and per task, and ``cpu ratio = 3 x
CPU per health request / CPU per task``; the last line gives the best batch.

Nothing else shares the process, so the spread between batches is smaller than over
uvicorn; this is the measure to compare two versions of the code (run both, alternating),
while ``bench.rest_cycle`` gives the rates of the served app. The client side (building
scopes, JSON of the requests and answers) is counted too, the same for both sides.

Run: ``python -m bench.inprocess_cycle [--database sqlite|postgres] [--tasks 1500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.databases import postgres_database  # noqa: E402

CONCURRENCY = 16
MOUNT = "/v1/joblib"
HEADERS = [
    (b"host", b"127.0.0.1"),
    (b"authorization", b"Bearer user:bench"),
    (b"content-type", b"application/json"),
]


class Caller:
    """Requests to an ASGI app, answered in full, without a server."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        raw = json.dumps(body).encode() if body is not None else b""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [*HEADERS, (b"content-length", str(len(raw)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        delivered = False
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await never.wait()  # the client never hangs up
            raise AssertionError("unreachable")

        status = 0
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        answer = b"".join(chunks)
        return status, json.loads(answer) if answer else None


async def _cycles(call: Caller, room: str, job: str, worker: str, tasks: int) -> None:
    done = 0
    while done < tasks:
        status, body = await call(
            "POST", f"{MOUNT}/rooms/{room}/tasks/{job}", {"payload": {"x": 1}}
        )
        assert status == 202, body
        status, body = await call("POST", f"{MOUNT}/tasks/claim", {"worker_id": worker})
        assert status == 200, body
        task = body["task"]
        if task is None:  # another loop took the one queued
            continue
        for target in ("running", "completed"):
            status, body = await call("PATCH", f"{MOUNT}/tasks/{task['id']}", {"status": target})
            assert status == 200, body
        done += 1


async def _health(call: Caller, requests: int) -> None:
    for _ in range(requests):
        status, _ = await call("GET", "/health")
        assert status == 200


async def measure(app: Any, tasks: int, batches: int) -> None:
    call = Caller(app)
    async with app.router.lifespan_context(app):
        room = "benchroom"
        workers = []
        for _ in range(CONCURRENCY):
            body = {"category": "modifiers", "name": "cycle", "schema": {}}
            status, answer = await call("PUT", f"{MOUNT}/rooms/{room}/jobs", body)
            assert status in (200, 201), answer
            workers.append(answer["worker_id"])
        job = f"{room}:modifiers:cycle"
        per_loop = max(1, tasks // CONCURRENCY)
        # Warm-up: statements compiled and prepared, caches filled.
        await asyncio.gather(*(_cycles(call, room, job, w, per_loop // 4 + 1) for w in workers))
        best: tuple[float, float] | None = None
        for batch in range(1, batches + 1):
            start = time.process_time()
            await asyncio.gather(*(_health(call, 2 * per_loop) for _ in workers))
            health = (time.process_time() - start) / (2 * per_loop * CONCURRENCY)
            start = time.process_time()
            await asyncio.gather(*(_cycles(call, room, job, w, per_loop) for w in workers))
            task = (time.process_time() - start) / (per_loop * CONCURRENCY)
            print(
                f"batch {batch}: {1e6 * health:.0f} us/health request, "
                f"{1e6 * task:.0f} us/task, cpu ratio {3 * health / task:.3f}",
                flush=True,
            )
            if best is None or task < best[1]:
                best = (health, task)
        assert best is not None
        print(
            f"best batch: {1e6 * best[1]:.0f} us/task, "
            f"cpu ratio {3 * best[0] / best[1]:.3f} ({CONCURRENCY} concurrent loops)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--tasks", type=int, default=1500, help="tasks per batch")
    parser.add_argument("--batches", type=int, default=3)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.database == "sqlite":
            workdir = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite+aiosqlite:///{workdir}/bench.db"
        else:
            url = stack.enter_context(postgres_database())
        os.environ["JOBLIB_TEST_DATABASE_URL"] = url
        # The bench's workers do not heartbeat; keep the sweeper away from them.
        os.environ["ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS"] = "3600"
        from tests.support import host

        logging.disable(logging.INFO)
        asyncio.run(measure(host.app, args.tasks, args.batches))


if __name__ == "__main__":
    main()
