"""Benchmark: how fast waiters learn about a change, in one process and across two.

Serves the test host (``tests/support/host.py``, the app mounted under uvicorn) in two set-ups:

* ``single``: one process, embedded SQLite, in-process notifier;
* ``two``: processes A and B on two ports sharing a fresh PostgreSQL database (created and
  dropped here) and Redis (notifier and Socket.IO ``AsyncRedisManager``). Waiters talk to
  A; the changes are made through B.

and measures, ``--samples`` times each (after a few warm-up rounds):

* long-poll wake: a ``GET /tasks/{id}`` with ``Prefer: wait=30`` is waiting (the script
  checks that the server registered the waiter before acting); the time from sending the
  ``PATCH {status: completed}`` to receiving the long-poll's answer. It includes the
  completing request's own write, so it is an upper bound on the wake-up itself.
* submit -> claimed, claim long-poll: a worker waits in ``POST /tasks/claim`` with
  ``Prefer: wait=30``; the time from sending the submit to receiving the claimed task.
* submit -> claimed, Socket.IO: a worker that joined its job room receives
  ``task_available`` and then sends ``POST /tasks/claim``; same clock.

Prints p50 and p95 in milliseconds against the target (p50 < 15 ms, p95 < 50 ms), and the
submit request's own round trip for reference: every submit -> claimed figure contains it.

Run: ``python -m bench.realtime_latency [--samples 100] [--setups single two]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
import socketio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.databases import postgres_database  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tests.support.services import require_redis  # noqa: E402

TOKEN = "user:bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WARMUP = 5
TARGET_P50_MS = 15.0
TARGET_P95_MS = 50.0


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Waiters:
    """Asks a server whether a long-poll is registered on a notifier channel yet."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = httpx.AsyncClient(base_url=server.origin, timeout=10)

    async def wait(self, channel: str) -> None:
        async with asyncio.timeout(10):
            while True:
                answer = await self.http.get(f"/joblib-waiters/{channel}")
                if answer.json()["count"] > 0:
                    return
                await asyncio.sleep(0.001)

    async def aclose(self) -> None:
        await self.http.aclose()


async def register(api: httpx.AsyncClient, room: str, name: str) -> dict[str, Any]:
    response = await api.put(
        f"/rooms/{room}/jobs", json={"category": "modifiers", "name": name, "schema": {}}
    )
    response.raise_for_status()
    return response.json()


async def long_poll_wake(
    a: ServerProcess, api_a: httpx.AsyncClient, api_b: httpx.AsyncClient, rounds: int
) -> list[float]:
    room = f"b{uuid.uuid4().hex[:10]}"
    job = await register(api_b, room, "Wake")
    waiters = Waiters(a)
    samples = []
    try:
        for _ in range(rounds):
            task = (
                await api_b.post(f"/rooms/{room}/tasks/{job['full_name']}", json={"payload": {}})
            ).json()
            await api_b.post("/tasks/claim", json={"worker_id": job["worker_id"]})
            await api_b.patch(f"/tasks/{task['id']}", json={"status": "running"})
            poll = asyncio.create_task(
                api_a.get(f"/tasks/{task['id']}", headers={"Prefer": "wait=30"})
            )
            await waiters.wait(f"task:{task['id']}")
            started = time.perf_counter()
            done = await api_b.patch(f"/tasks/{task['id']}", json={"status": "completed"})
            done.raise_for_status()
            answer = await poll
            samples.append(time.perf_counter() - started)
            assert answer.json()["status"] == "completed", answer.text
    finally:
        await waiters.aclose()
        await api_b.delete(f"/workers/{job['worker_id']}")
    return samples


# Filled by claim_long_poll: the submit request's own round trip, for reference.
submit_rtt: list[float] = []


async def claim_long_poll(
    a: ServerProcess, api_a: httpx.AsyncClient, api_b: httpx.AsyncClient, rounds: int
) -> list[float]:
    room = f"b{uuid.uuid4().hex[:10]}"
    job = await register(api_a, room, "ClaimPoll")
    waiters = Waiters(a)
    samples = []
    try:
        for _ in range(rounds):
            poll = asyncio.create_task(
                api_a.post(
                    "/tasks/claim",
                    json={"worker_id": job["worker_id"]},
                    headers={"Prefer": "wait=30"},
                )
            )
            await waiters.wait(f"job:{job['full_name']}")
            started = time.perf_counter()
            submitted = await api_b.post(
                f"/rooms/{room}/tasks/{job['full_name']}", json={"payload": {}}
            )
            submit_rtt.append(time.perf_counter() - started)
            claimed = (await poll).json()["task"]
            samples.append(time.perf_counter() - started)
            assert claimed is not None and claimed["id"] == submitted.json()["id"]
            await api_a.patch(f"/tasks/{claimed['id']}", json={"status": "cancelled"})
    finally:
        await waiters.aclose()
        await api_a.delete(f"/workers/{job['worker_id']}")
    return samples


async def socketio_claim(
    a: ServerProcess, api_a: httpx.AsyncClient, api_b: httpx.AsyncClient, rounds: int
) -> list[float]:
    room = f"b{uuid.uuid4().hex[:10]}"
    job = await register(api_a, room, "ClaimSio")
    worker_id = job["worker_id"]
    claimed: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)

    @sio.on("task_available")
    async def on_available(data: dict[str, Any]) -> None:
        response = await api_a.post("/tasks/claim", json={"worker_id": worker_id})
        claimed.put_nowait((time.perf_counter(), response.json()["task"]))

    await sio.connect(
        a.origin,
        socketio_path=a.mount.strip("/") + "/socket.io",
        transports=["websocket"],
        auth={"token": TOKEN},
    )
    samples = []
    try:
        answer = await sio.call(
            "join_job_room", {"job_name": job["full_name"], "worker_id": worker_id}
        )
        assert answer == {"status": "ok"}, answer
        for _ in range(rounds):
            started = time.perf_counter()
            submitted = await api_b.post(
                f"/rooms/{room}/tasks/{job['full_name']}", json={"payload": {}}
            )
            at, task = await asyncio.wait_for(claimed.get(), 10)
            samples.append(at - started)
            assert task is not None and task["id"] == submitted.json()["id"]
            await api_a.patch(f"/tasks/{task['id']}", json={"status": "cancelled"})
    finally:
        # Leaving also cleans the worker up (its connection drops).
        await sio.disconnect()
    return samples


REFERENCE = "(reference: the submit request alone)"
SCENARIOS = {
    "long-poll wake after completion": long_poll_wake,
    "submit -> claimed (claim long-poll)": claim_long_poll,
    "submit -> claimed (task_available + claim)": socketio_claim,
}


async def run_setup(a: ServerProcess, b: ServerProcess, samples: int) -> dict[str, list[float]]:
    results = {}
    async with (
        httpx.AsyncClient(base_url=a.base, headers=AUTH, timeout=60) as api_a,
        httpx.AsyncClient(base_url=b.base, headers=AUTH, timeout=60) as api_b,
    ):
        for name, scenario in SCENARIOS.items():
            submit_rtt.clear()
            measured = await scenario(a, api_a, api_b, WARMUP + samples)
            results[name] = measured[WARMUP:]
            if submit_rtt:
                results[REFERENCE] = submit_rtt[WARMUP:]
    return results


@contextlib.contextmanager
def servers(setup: str, workdir: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    if setup == "single":
        env = {"JOBLIB_TEST_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}"}
        with ServerProcess(env, log_path=workdir / "single.log") as server:
            yield server, server
        return
    redis_url = require_redis()
    prefix = f"joblibbench:{uuid.uuid4().hex[:12]}:"
    with postgres_database() as database_url:
        env = {
            "JOBLIB_TEST_DATABASE_URL": database_url,
            "JOBLIB_TEST_REDIS_URL": redis_url,
            "JOBLIB_TEST_REDIS_PREFIX": prefix,
        }
        try:
            with (
                ServerProcess(env, log_path=workdir / "a.log") as a,
                ServerProcess(env, mount="/api/x/jobs", log_path=workdir / "b.log") as b,
            ):
                yield a, b
        finally:
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
            client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--setups", nargs="+", default=["single", "two"], choices=["single", "two"])
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.samples} samples each after {WARMUP} warm-up rounds")
    print(f"target: p50 < {TARGET_P50_MS:g} ms, p95 < {TARGET_P95_MS:g} ms\n")
    print(f"{'set-up':<32} {'measure':<44} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}  target")
    all_met = True
    with tempfile.TemporaryDirectory() as tmp:
        for setup in args.setups:
            label = {
                "single": "single process (SQLite)",
                "two": "two processes (PostgreSQL+Redis)",
            }[setup]
            with servers(setup, Path(tmp)) as (a, b):
                results = asyncio.run(run_setup(a, b, args.samples))
            for name, values in results.items():
                ms = [v * 1000 for v in values]
                p50, p95 = statistics.median(ms), percentile(ms, 0.95)
                met = p50 < TARGET_P50_MS and p95 < TARGET_P95_MS
                if name != REFERENCE:
                    all_met &= met
                verdict = "" if name == REFERENCE else "met" if met else "MISSED"
                print(f"{label:<32} {name:<44} {p50:7.1f} {p95:7.1f} {max(ms):7.1f}  {verdict}")
    return 0 if all_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
