"""Benchmark: the REST task cycle against a trivial endpoint of the same host.

Starts the test host (``tests/support/host.py``: the app at ``/v1/joblib`` in a FastAPI host,
one uvicorn process) on SQLite, then on a fresh PostgreSQL database it creates and drops, and
for each client concurrency C in (1, 4, 16) measures, one after the other:

* ``health``: ``GET /health`` (a trivial host endpoint) with C concurrent loops, requests/s,
  measured right before and right after each of the modes below and averaged;
* ``loop``: C concurrent workers, each doing for one task ``POST .../tasks/{job}`` (submit),
  ``POST /tasks/claim``, ``PATCH running``, ``PATCH completed`` (four requests per task);
* ``prefilled``: the same C workers on a queue filled beforehand (submits not timed), each
  doing claim, ``PATCH running``, ``PATCH completed`` (three requests per task).

Every worker has its own worker id; all are registered on the same job, so claims compete
for one queue. Printed per mode: tasks/s and ``ratio = 3 x tasks/s / health requests/s``,
plus the server's CPU time per request (from ``/proc``), which stays meaningful when other
processes compete for the machine: ``cpu ratio = 3 x CPU per health request / CPU per task``.
On PostgreSQL, the CPU per task of the machine's PostgreSQL processes is printed too: they
share the two cores with the server and the client.

The load runs in separate client processes (``--client-processes``, default 1; every client
process runs its share of the C loops on one asyncio loop) so that the server process is
what is measured. The default client is ``bench/rawhttp.py`` (keep-alive connections, a few
microseconds per request); ``--client httpx`` uses ``httpx.AsyncClient``, which costs more
CPU per request than the trivial endpoint and so under-measures it on a small machine.

With ``--servers 2`` (PostgreSQL only) the same loops run against TWO server processes on
one database, with Redis for the notifier and Socket.IO manager (as ``tests/support/host.py`` is
configured by environment): the workers are split between the servers, the health rate is
still one server's, and the CPU per task is both servers' together.

Run: ``python -m bench.rest_cycle [--duration 4] [--databases sqlite postgres] [--servers 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rawhttp import RawConnection  # noqa: E402
from tests.support.databases import postgres_database  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

TOKEN = "user:bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONCURRENCY = (1, 4, 16)
TARGET_RATIO = 0.5
MODES = ("loop", "prefilled")


class Session(Protocol):
    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]: ...


class HttpxSession:
    """The same calls as :class:`RawConnection`, through a shared ``httpx.AsyncClient``."""

    def __init__(self, client: httpx.AsyncClient, origin: str) -> None:
        self.client = client
        self.origin = origin

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await self.client.request(method, self.origin + path, json=body)
        return response.status_code, (response.json() if response.content else None)


@dataclass(frozen=True)
class Plan:
    """What one client process runs."""

    kind: str  # "health", "loop" or "prefilled"
    client: str  # "raw" or "httpx"
    origin: str
    mount: str
    room: str
    job: str
    workers: tuple[str, ...]  # one loop per entry (worker ids for the cycles)
    warmup: float
    duration: float


@dataclass
class Count:
    timed: int = 0  # operations finished inside the timed window
    total: int = 0  # all operations, warm-up included (for CPU per operation)


async def _health_loop(session: Session, plan: Plan, start: float, end: float) -> Count:
    count = Count()
    while True:
        status, _ = await session.request("GET", "/health")
        assert status == 200
        count.total += 1
        now = time.monotonic()
        if now >= end:
            return count
        if now >= start:
            count.timed += 1


async def _cycle_loop(session: Session, plan: Plan, worker: str, start: float, end: float) -> Count:
    submit_path = f"{plan.mount}/rooms/{plan.room}/tasks/{plan.job}"
    claim_path = f"{plan.mount}/tasks/claim"
    count = Count()
    while True:
        if plan.kind == "loop":
            status, body = await session.request("POST", submit_path, {"payload": {"x": 1}})
            assert status == 202, body
        status, body = await session.request("POST", claim_path, {"worker_id": worker})
        assert status == 200, body
        task = body["task"]
        if task is None and plan.kind == "prefilled":
            raise RuntimeError("the prefilled queue ran dry; raise --prefill")
        # In "loop" another worker may have taken ours and the queue be empty a moment.
        if task is not None:
            task_path = f"{plan.mount}/tasks/{task['id']}"
            for target in ("running", "completed"):
                status, body = await session.request("PATCH", task_path, {"status": target})
                assert status == 200, body
            count.total += 1
        now = time.monotonic()
        if now >= end:
            return count
        if now >= start and task is not None:
            count.timed += 1


async def _run_plan(plan: Plan, go_at: float) -> tuple[int, int, float]:
    limits = httpx.Limits(max_connections=len(plan.workers) + 1)
    async with httpx.AsyncClient(headers=AUTH, limits=limits, timeout=60) as client:
        sessions: list[Session]
        if plan.client == "raw":
            sessions = [await RawConnection(plan.origin, AUTH).open() for _ in plan.workers]
        else:
            sessions = [HttpxSession(client, plan.origin) for _ in plan.workers]
        # Open the connections before the clock starts.
        await asyncio.gather(*(s.request("GET", "/health") for s in sessions))
        await asyncio.sleep(max(0.0, go_at - time.time()))
        cpu0 = time.process_time()
        start = time.monotonic() + plan.warmup
        end = start + plan.duration
        if plan.kind == "health":
            loops = [_health_loop(s, plan, start, end) for s in sessions]
        else:
            loops = [
                _cycle_loop(s, plan, w, start, end)
                for s, w in zip(sessions, plan.workers, strict=True)
            ]
        counts = await asyncio.gather(*loops)
        cpu = time.process_time() - cpu0
        for session in sessions:
            if isinstance(session, RawConnection):
                await session.close()
    timed = sum(c.timed for c in counts)
    total = sum(c.total for c in counts)
    return timed, total, cpu / (plan.warmup + plan.duration)


def _client_process(plan: Plan, go_at: float, out: mp.Queue) -> None:
    try:
        out.put(asyncio.run(_run_plan(plan, go_at)))
    except Exception as exc:
        # Handed to the parent, which would otherwise wait for a result that never comes.
        out.put(exc)
        raise


@dataclass
class Measure:
    rate: float  # operations per second in the timed window
    server_cpu_per_op: float  # seconds
    client_cpu: float  # busiest client process's CPU share
    database_cpu_per_op: float = 0.0  # seconds, PostgreSQL's processes on this machine


def run_load(plans: list[Plan], *servers: ServerProcess) -> Measure:
    """Run the plans in parallel client processes, all starting their clocks together.

    The CPU per operation is that of all ``servers`` together.
    """
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    go_at = time.time() + 1.5
    procs = [ctx.Process(target=_client_process, args=(p, go_at, out)) for p in plans]
    for proc in procs:
        proc.start()
    cpu0 = sum(server_cpu_seconds(server) for server in servers)
    database_cpu0 = postgres_cpu_seconds()
    results = [out.get(timeout=120) for _ in procs]
    for result in results:
        if isinstance(result, Exception):
            raise RuntimeError(f"a client process failed: {result}") from result
    cpu = sum(server_cpu_seconds(server) for server in servers) - cpu0
    database_cpu = postgres_cpu_seconds() - database_cpu0
    for proc in procs:
        proc.join(timeout=30)
    timed = sum(r[0] for r in results)
    total = sum(r[1] for r in results)
    return Measure(
        timed / plans[0].duration,
        cpu / max(total, 1),
        max(r[2] for r in results),
        database_cpu / max(total, 1),
    )


def mean_measure(first: Measure, second: Measure) -> Measure:
    """The mean of two measurements of the same load."""
    return Measure(
        (first.rate + second.rate) / 2,
        (first.server_cpu_per_op + second.server_cpu_per_op) / 2,
        max(first.client_cpu, second.client_cpu),
    )


def server_cpu_seconds(server: ServerProcess) -> float:
    """User + system CPU time of the server process so far (Linux ``/proc``)."""
    assert server.process is not None
    seconds = _cpu_seconds(server.process.pid)
    if seconds is None:
        raise RuntimeError(f"the server process {server.process.pid} is gone")
    return seconds


def _cpu_seconds(pid: int | str, name: str | None = None) -> float | None:
    """User + system CPU time of a process (``None`` if gone, or not named ``name``)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            head, tail = stat.read().rsplit(")", 1)
    except OSError:
        return None
    if name is not None and head.split("(", 1)[1] != name:
        return None
    fields = tail.split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time so far of this machine's PostgreSQL processes (the database the bench
    creates runs here): what the database costs next to the server, on the same cores."""
    pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    return sum(_cpu_seconds(pid, "postgres") or 0.0 for pid in pids)


def split(items: list[str], parts: int) -> list[tuple[str, ...]]:
    parts = max(1, min(parts, len(items)))
    return [tuple(items[i::parts]) for i in range(parts)]


def prepare_job(server: ServerProcess, concurrency: int) -> tuple[str, str, list[str]]:
    """A fresh room, one job, and ``concurrency`` workers registered on it."""
    room = f"bench{uuid.uuid4().hex[:8]}"
    workers = []
    with httpx.Client(headers=AUTH, timeout=30) as client:
        for _ in range(concurrency):
            body = {"category": "modifiers", "name": "cycle", "schema": {}}
            response = client.put(f"{server.base}/rooms/{room}/jobs", json=body)
            response.raise_for_status()
            workers.append(response.json()["worker_id"])
    return room, f"{room}:modifiers:cycle", workers


async def _prefill(server: ServerProcess, room: str, job: str, count: int) -> None:
    connections = [await RawConnection(server.origin, AUTH).open() for _ in range(8)]
    path = f"{server.mount}/rooms/{room}/tasks/{job}"

    async def submit(conn: RawConnection, n: int) -> None:
        for _ in range(n):
            status, body = await conn.request("POST", path, {"payload": {"x": 1}})
            assert status == 202, body

    share = -(-count // len(connections))
    await asyncio.gather(*(submit(c, share) for c in connections))
    for conn in connections:
        await conn.close()


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    else:
        with postgres_database() as url:
            yield url


def make_plans(
    args: argparse.Namespace,
    kind: str,
    servers: tuple[ServerProcess, ...],
    loops: list[str],
    procs: int,
    room: str = "",
    job: str = "",
) -> list[Plan]:
    """The loops split over ``procs`` client processes; process i talks to server i % n."""
    return [
        Plan(
            kind,
            args.client,
            servers[i % len(servers)].origin,
            servers[0].mount,
            room,
            job,
            part,
            args.warmup,
            args.duration,
        )
        for i, part in enumerate(split(loops, procs))
    ]


def _row(
    kind: str, mode: str, concurrency: int, procs: int, health: Measure, cycle: Measure
) -> dict:
    return {
        "database": kind,
        "mode": mode,
        "concurrency": concurrency,
        "client_processes": procs,
        "health_rps": health.rate,
        "tasks_per_s": cycle.rate,
        "ratio": 3 * cycle.rate / health.rate,
        "health_cpu_ms": 1000 * health.server_cpu_per_op,
        "task_cpu_ms": 1000 * cycle.server_cpu_per_op,
        "cpu_ratio": 3 * health.server_cpu_per_op / cycle.server_cpu_per_op,
        "database_cpu_ms": 1000 * cycle.database_cpu_per_op,
        "client_cpu": max(health.client_cpu, cycle.client_cpu),
    }


def bench_database(kind: str, args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
        env = {
            "JOBLIB_TEST_DATABASE_URL": url,
            # The bench's workers do not heartbeat; keep the sweeper away from them.
            "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": "3600",
        }
        with ServerProcess(env, log_path=Path(tmp) / "server.log") as server:
            for concurrency in args.concurrency:
                procs = min(args.client_processes, concurrency)

                loops = [""] * concurrency
                health_plans = make_plans(args, "health", (server,), loops, procs)
                for mode in args.modes:
                    room, job, workers = prepare_job(server, concurrency)
                    if mode == "prefilled":
                        asyncio.run(_prefill(server, room, job, args.prefill))
                    # The baseline right before and right after the cycle, averaged: on a
                    # shared machine one measurement of it can be off by a fifth.
                    before = run_load(health_plans, server)
                    cycle = run_load(
                        make_plans(args, mode, (server,), workers, procs, room, job), server
                    )
                    health = mean_measure(before, run_load(health_plans, server))
                    row = _row(kind, mode, concurrency, procs, health, cycle)
                    rows.append(row)
                    print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    return (
        f"{row['database']:>11} {row['mode']:>9} C={row['concurrency']:<3}"
        f"health {row['health_rps']:6.0f} req/s  "
        f"{row['tasks_per_s']:6.1f} tasks/s  ratio {row['ratio']:.3f}  | server CPU: "
        f"{row['health_cpu_ms']:.3f} ms/health req, {row['task_cpu_ms']:.2f} ms/task, "
        f"cpu ratio {row['cpu_ratio']:.3f}  | client CPU {100 * row['client_cpu']:.0f}%"
        + (f"  | PostgreSQL {row['database_cpu_ms']:.2f} ms/task" if row["database_cpu_ms"] else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", nargs="*", default=["sqlite", "postgres"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=list(CONCURRENCY))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--prefill", type=int, default=20000, help="queue size for prefilled")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument(
        "--servers",
        type=int,
        choices=[1, 2],
        default=1,
        help="2: also run PostgreSQL with two server processes (Redis for the notifier)",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="raw: bench/rawhttp.py keep-alive connections (default); httpx: AsyncClient",
    )
    args = parser.parse_args()
    print(
        f"server: 1 uvicorn process; load: {args.client_processes} client process(es), "
        f"{args.client} HTTP client; {os.cpu_count()} CPUs; "
        f"target ratio >= {TARGET_RATIO} on SQLite"
    )
    for kind in args.databases:
        bench_database(kind, args)
    if args.servers == 2:
        from bench.rest_cycle_servers import bench_two_servers

        bench_two_servers(args)


if __name__ == "__main__":
    main()
