"""The REST cycle of ``bench.rest_cycle`` against TWO server processes on one PostgreSQL.

Run with ``python -m bench.rest_cycle --databases --servers 2`` (no other database), or
with other databases before it. Both servers share the database and use Redis for the
notifier and Socket.IO manager, as ``tests/support/host.py`` is configured by environment. The
workers are split between the servers (client process i talks to server i % 2); the health
rate, the ratio's denominator, is one server's (from two client processes); the CPU per
task is both servers' together.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

import redis

from bench.rest_cycle import _prefill, _row, format_row, make_plans, prepare_job, run_load
from tests.support.databases import postgres_database
from tests.support.server import ServerProcess
from tests.support.services import REDIS_URL


def bench_two_servers(args: argparse.Namespace) -> list[dict]:
    """The cycle against two server processes on one PostgreSQL database (see the module)."""
    rows = []
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as tmp, postgres_database() as url:
        env = {
            "JOBLIB_TEST_DATABASE_URL": url,
            "JOBLIB_TEST_REDIS_URL": REDIS_URL,
            "JOBLIB_TEST_REDIS_PREFIX": prefix,
            "ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS": "3600",
        }
        logs = [Path(tmp) / f"server{i}.log" for i in range(2)]
        try:
            with (
                ServerProcess(env, log_path=logs[0]) as first,
                ServerProcess(env, log_path=logs[1]) as second,
            ):
                servers = (first, second)
                for concurrency in args.concurrency:
                    procs = max(2, min(args.client_processes, concurrency))

                    loops = [""] * concurrency
                    health = run_load(make_plans(args, "health", (first,), loops, procs), first)
                    for mode in args.modes:
                        room, job, workers = prepare_job(first, concurrency)
                        if mode == "prefilled":
                            asyncio.run(_prefill(first, room, job, args.prefill))
                        cycle = run_load(
                            make_plans(args, mode, servers, workers, procs, room, job), *servers
                        )
                        row = _row("postgres x2", mode, concurrency, procs, health, cycle)
                        rows.append(row)
                        print(format_row(row), flush=True)
        finally:
            _delete_redis_keys(prefix)
    return rows


def _delete_redis_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
