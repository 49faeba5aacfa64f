"""``<mount>/metrics`` after a known workload, parsed with prometheus_client's own parser.

PostgreSQL: two server processes sharing the database and Redis, the workload split
between them; each process must answer the same, exact counts. SQLite: one process.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from joblib_app.metrics import QUEUE_BUCKETS, RUN_BUCKETS
from tests.acceptance.realtime.test_cross_process import start_pair
from tests.support.api import Api
from tests.support.databases import postgres_database
from tests.support.names import ADMIN, ALICE, assert_problem, new_room, unique
from tests.support.server import ServerProcess
from tests.support.services import delete_redis_prefix, require_redis

SCRAPER = "scrape-secret"
FLUSH_TIMEOUT = 15.0
# Sample name and sorted labels to value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(params=["sqlite", "postgres"])
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """SQLite: one process. PostgreSQL: two processes on one database and one Redis prefix."""
    extra = {"JOBLIB_TEST_METRICS_TOKEN": SCRAPER, "ZNDRAW_JOBLIB_METRICS_FLUSH_SECONDS": "0.2"}
    if request.param == "sqlite":
        env = {"JOBLIB_TEST_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'j.db'}", **extra}
        with ServerProcess(env, log_path=tmp_path / "server.log") as server:
            yield [server]
        return
    redis_url = require_redis()
    prefix = f"joblibtest:{unique('m')}:"
    with postgres_database() as url:
        a, b = start_pair(url, redis_url, prefix, tmp_path, **extra)
        try:
            yield [a, b]
        finally:
            a.stop()
            b.stop()
            delete_redis_prefix(redis_url, prefix)


def _seconds(task: dict[str, Any], start: str, end: str) -> float:
    return (datetime.fromisoformat(task[end]) - datetime.fromisoformat(task[start])).total_seconds()


def _parse(text: str) -> Samples:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _buckets(values: list[float], bounds: tuple[float, ...]) -> list[int]:
    """Cumulative ``le`` counts, the last one ``+Inf``."""
    per_bucket = [0] * (len(bounds) + 1)
    for value in values:
        per_bucket[bisect.bisect_left(bounds, value)] += 1
    cumulative, total = [], 0
    for count in per_bucket:
        total += count
        cumulative.append(total)
    return cumulative


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else f"{bound:g}"


async def test_metrics_after_known_workload(servers: list[ServerProcess]) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        apis = [Api(client, server) for server in servers]
        a, b = apis[0], apis[-1]

        # Who may read: a superuser, or the scraper the config opened it to.
        assert_problem(await a.request("GET", "/metrics", None), 401)
        assert_problem(await a.request("GET", "/metrics", ALICE), 403, "forbidden")
        assert (await b.request("GET", "/metrics", SCRAPER)).status_code == 200

        room = new_room()
        registered = await a.register(room, unique("Run"))
        job, worker = registered["full_name"], registered["worker_id"]
        other = (await b.register(room, unique("Idle"), worker_id=worker))["full_name"]
        await b.create_worker()  # a second worker, serving nothing

        submitted = [await (a if i % 2 else b).submit(room, job) for i in range(5)]
        waits_low, waits_high = [], []
        claimed = []
        for i, task in enumerate(submitted):
            api = apis[i % len(apis)]
            # The queue wait is taken when the claim commits, between these two instants.
            before = time.time()
            got = await api.claim(worker)
            after = time.time()
            assert got is not None and got["id"] == task["id"]
            created = datetime.fromisoformat(task["created_at"]).timestamp()
            waits_low.append(before - created)
            waits_high.append(after - created)
            claimed.append(got)
        ran: dict[str, list[float]] = {"completed": [], "failed": [], "cancelled": []}
        outcomes = ["completed", "completed", "failed", "cancelled", None]
        for i, (task, outcome) in enumerate(zip(claimed, outcomes, strict=True)):
            api, other_api = apis[i % len(apis)], apis[(i + 1) % len(apis)]
            response = await api.patch_task(task["id"], "running")
            assert response.status_code == 200, response.text
            if outcome is None:
                continue
            response = await other_api.patch_task(task["id"], outcome)
            assert response.status_code == 200, response.text
            ran[outcome].append(_seconds(response.json(), "started_at", "completed_at"))

        # Never started: no queue wait, no run time; still counted by status.
        idle = [await b.submit(room, other) for _ in range(2)]
        assert (await a.patch_task(idle[0]["id"], "cancelled")).status_code == 200

        expected_tasks = {
            (job, "completed"): 2,
            (job, "failed"): 1,
            (job, "cancelled"): 1,
            (job, "running"): 1,
            (other, "cancelled"): 1,
            (other, "pending"): 1,
        }

        async def scrape(api: Api) -> Samples:
            response = await api.request("GET", "/metrics", ADMIN)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("text/plain")
            return _parse(response.text)

        # Each process adds its observations to Redis on its own clock: wait for the last.
        deadline = asyncio.get_running_loop().time() + FLUSH_TIMEOUT
        while True:
            samples = await scrape(a)
            counts = (
                samples.get(("joblib_task_queue_seconds_count", ())),
                *(
                    samples.get(("joblib_task_run_seconds_count", (("status", s),)))
                    for s in ("completed", "failed", "cancelled")
                ),
            )
            if counts == (5, 2, 1, 1):
                break
            assert asyncio.get_running_loop().time() < deadline, counts
            assert all(c is None or c <= e for c, e in zip(counts, (5, 2, 1, 1), strict=True))
            await asyncio.sleep(0.1)

        for api in apis:
            samples = await scrape(api)
            tasks = {
                (dict(labels)["job"], dict(labels)["status"]): value
                for (name, labels), value in samples.items()
                if name == "joblib_tasks"
            }
            assert tasks == expected_tasks
            assert samples["joblib_workers", ()] == 2

            queue = [
                samples["joblib_task_queue_seconds_bucket", (("le", _le(bound)),)]
                for bound in [*QUEUE_BUCKETS, float("inf")]
            ]
            assert queue[-1] == 5
            low, high = _buckets(waits_low, QUEUE_BUCKETS), _buckets(waits_high, QUEUE_BUCKETS)
            # A wait is at least its low bound and at most its high one.
            assert all(h <= q <= lo for q, lo, h in zip(queue, low, high, strict=True)), queue
            queue_sum = samples["joblib_task_queue_seconds_sum", ()]
            assert sum(waits_low) - 0.01 <= queue_sum <= sum(waits_high) + 0.01

            for status, values in ran.items():
                run = [
                    samples["joblib_task_run_seconds_bucket", (("le", _le(b)), ("status", status))]
                    for b in [*RUN_BUCKETS, float("inf")]
                ]
                assert run == _buckets(values, RUN_BUCKETS), (status, run, values)
                run_sum = samples["joblib_task_run_seconds_sum", (("status", status),)]
                assert run_sum == pytest.approx(sum(values), abs=1e-5)
