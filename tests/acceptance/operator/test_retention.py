"""Retention: the sweeper deletes 100,000 old finished tasks, in batches, on both databases,
and nothing pending, claimed or running, nor anything finished recently; a server stopped
mid-sweep stops at once, and the next one carries on."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from joblib_app.models import utcnow
from tests.acceptance.operator.seed import (
    finished_rows,
    seed_finished,
    seed_tasks,
    task_count,
    task_ids,
    task_row,
)
from tests.support.databases import DATABASES, database
from tests.support.server import ServerProcess

OLD_TASKS = 100_000
RETENTION = 24 * 3600
SWEEP_TIMEOUT = 180.0
# The sweep must leave the event loop to requests between its batches.
MAX_REQUEST_SECONDS = 1.0
# A server stopped mid-sweep stops between two batches, not after the last one.
MAX_STOP_SECONDS = 6.0


@pytest.fixture(params=DATABASES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as database_url:
        yield database_url


async def test_retention_deletes_only_old_finished_tasks(url: str, tmp_path: Path) -> None:
    now = utcnow()
    old = now - timedelta(seconds=RETENTION + 3600)
    recent = now - timedelta(seconds=60)
    job = "11111111-1111-1111-1111-111111111111"
    kept = [
        # In flight or waiting since long ago: never deleted, however old.
        *(task_row(s, created=old, finished=None, job=job) for s in ("pending", "claimed")),
        task_row("running", created=old, finished=None, job=job),
        # Finished, but within the retention period.
        *finished_rows(30, created=recent, finished=recent),
    ]
    await seed_tasks(url, kept)
    await seed_finished(url, OLD_TASKS, old)
    assert await task_count(url) == OLD_TASKS + len(kept)
    env = {
        "JOBLIB_TEST_DATABASE_URL": url,
        "ZNDRAW_JOBLIB_TASK_RETENTION_SECONDS": str(RETENTION),
        "ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS": "0.5",
    }
    log = tmp_path / "server.log"
    deadline = time.monotonic() + SWEEP_TIMEOUT
    with ServerProcess(env, log_path=log) as first:
        while await task_count(url) == OLD_TASKS + len(kept):
            assert time.monotonic() < deadline, "the sweep never started"
            await asyncio.sleep(0.05)
        began = time.monotonic()
        first.stop()
        stopped_in = time.monotonic() - began
    assert stopped_in < MAX_STOP_SECONDS, stopped_in
    assert await task_count(url) > len(kept), "the sweep finished before the stop"

    with ServerProcess(env, log_path=log) as server:
        slowest = 0.0
        deadline = time.monotonic() + SWEEP_TIMEOUT
        async with httpx.AsyncClient(timeout=30) as client:
            while await task_count(url) > len(kept):
                assert time.monotonic() < deadline, "old tasks still there"
                started = time.monotonic()
                response = await client.get(server.origin + "/health")
                assert response.status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                await asyncio.sleep(0.02)
    assert await task_ids(url) == {row["id"] for row in kept}
    assert slowest < MAX_REQUEST_SECONDS, slowest
    deleted = re.findall(r"Sweeper deleted (\d+) task", log.read_text())
    assert sum(map(int, deleted)) == OLD_TASKS, deleted
