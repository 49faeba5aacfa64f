"""``<mount>/metrics``: Prometheus exposition, correct with several server processes.

Gauges (``joblib_tasks{job,status}``, ``joblib_workers``) are counted in the database at
scrape time, so every process answers the same. The histograms
(``joblib_task_queue_seconds``, submit to claim; ``joblib_task_run_seconds{status}``, start
to the terminal status) are observed by the process that made the change, from its
committed task events, and summed across processes in Redis:

* prometheus_client's multiprocess mode needs ``PROMETHEUS_MULTIPROC_DIR`` set before the
  library is imported and a directory shared by the processes of one machine only: a
  mounted sub-app cannot arrange the first, and servers on several machines break the second.
* Histograms recomputed from task timestamps at scrape time would go down when retention
  deletes old tasks (a histogram's counts must only grow) and would cost a scan of the
  whole table per scrape.

Each process adds what it observed to Redis hashes every ``metrics_flush_seconds`` (one
pipelined round trip, off the task path), and before it answers a scrape. Without Redis
(the one-process deployment) the counts stay in the process.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from joblib_app.api.deps import authenticate
from joblib_app.context import AppContext
from joblib_app.domain.errors import Forbidden
from joblib_app.domain.statuses import TERMINAL_STATUSES, TaskStatus
from joblib_app.models import task_table, worker_table
from joblib_app.realtime.events import Outbox

logger = logging.getLogger(__name__)

# Seconds. Queue waits run from milliseconds (a waiting worker) to hours (a backlog).
QUEUE_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip
RUN_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600,
)  # fmt: skip
_TERMINAL = tuple(sorted(s.value for s in TERMINAL_STATUSES))
_CLAIMED = TaskStatus.CLAIMED.value


class _Histogram:
    """Per-bucket (not cumulative) counts, their sum and count."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.sum = 0.0
        self.count = 0

    def observe(self, bounds: Sequence[float], value: float) -> None:
        # ``le`` buckets: a value equal to a bound belongs to that bound's bucket.
        self.buckets[bisect.bisect_left(bounds, value)] += 1
        self.sum += value
        self.count += 1

    def add(self, other: _Histogram) -> None:
        for index, count in enumerate(other.buckets):
            self.buckets[index] += count
        self.sum += other.sum
        self.count += other.count


def _series_keys() -> list[tuple[str, str | None, tuple[float, ...]]]:
    """(metric, status label, bounds) of every histogram series."""
    return [("queue", None, QUEUE_BUCKETS)] + [("run", s, RUN_BUCKETS) for s in _TERMINAL]


class TaskTimings:
    """The two task histograms: observed from committed outboxes, summed across processes.

    ``observe`` is the :attr:`AppContext.dispatch_hooks` entry: it only adds to counters
    in memory. With Redis, :meth:`start` runs the flusher that moves them there.
    """

    def __init__(
        self,
        *,
        redis_url: str | None,
        key_prefix: str,
        operation_timeout: float,
        flush_seconds: float,
    ) -> None:
        self._keys = {
            (metric, status): f"{key_prefix}metrics:{metric}" + (f":{status}" if status else "")
            for metric, status, _ in _series_keys()
        }
        self._bounds = {(metric, status): bounds for metric, status, bounds in _series_keys()}
        # Observed here and not yet in Redis (all of them, without Redis).
        self._pending = self._empty()
        self._redis: aioredis.Redis | None = (
            aioredis.Redis.from_url(
                redis_url,
                socket_timeout=operation_timeout,
                socket_connect_timeout=operation_timeout,
            )
            if redis_url
            else None
        )
        self._flush_seconds = flush_seconds
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._failing = False

    def _empty(self) -> dict[tuple[str, str | None], _Histogram]:
        return {key: _Histogram(len(bounds) + 1) for key, bounds in self._bounds.items()}

    def observe(self, outbox: Outbox) -> None:
        """Record the queue wait of each claimed task and the run time of each finished one."""
        for row, _position in outbox.task_changes:
            status = row.status
            if status == _CLAIMED:
                created: datetime | None = row.created_at
                if created is not None:
                    wait = (datetime.now(created.tzinfo) - created).total_seconds()
                    self._pending["queue", None].observe(QUEUE_BUCKETS, max(wait, 0.0))
            elif status in _TERMINAL:
                started: datetime | None = row.started_at
                completed: datetime | None = row.completed_at
                if started is not None and completed is not None:
                    ran = max((completed - started).total_seconds(), 0.0)
                    self._pending["run", status].observe(RUN_BUCKETS, ran)

    async def start(self) -> None:
        if self._redis is not None and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="joblib-metrics-flush")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        if self._redis is not None:
            await self.flush()
            await self._redis.aclose()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()

    async def flush(self) -> bool:
        """Add what this process observed to Redis; ``False`` (and kept) if Redis failed."""
        if self._redis is None:
            return True
        async with self._flush_lock:
            taken, self._pending = self._pending, self._empty()
            pipe = self._redis.pipeline(transaction=False)
            for key, histogram in taken.items():
                if not histogram.count:
                    continue
                fields = {f"b{i}": n for i, n in enumerate(histogram.buckets) if n}
                for field, n in fields.items():
                    pipe.hincrby(self._keys[key], field, n)
                pipe.hincrby(self._keys[key], "count", histogram.count)
                pipe.hincrbyfloat(self._keys[key], "sum", histogram.sum)
            if not len(pipe):
                return True
            try:
                await pipe.execute()
            except (RedisError, OSError) as exc:
                # Kept for the next flush: a Redis outage delays the counts, loses none.
                for key, histogram in taken.items():
                    self._pending[key].add(histogram)
                if not self._failing:
                    logger.warning("Task timings not written to Redis, kept for later: %s", exc)
                    self._failing = True
                return False
            if self._failing:
                logger.info("Task timings written to Redis again")
                self._failing = False
            return True

    async def totals(self) -> dict[tuple[str, str | None], _Histogram]:
        """Every process's counts (with Redis), or this process's."""
        if self._redis is None:
            return self._pending
        await self.flush()
        pipe = self._redis.pipeline(transaction=False)
        for key in self._keys.values():
            pipe.hgetall(key)
        answers = await pipe.execute()
        totals = self._empty()
        for series, raw in zip(self._keys, answers, strict=True):
            histogram = totals[series]
            for field, value in raw.items():
                name = field.decode()
                if name == "sum":
                    histogram.sum = float(value)
                elif name == "count":
                    histogram.count = int(value)
                else:
                    histogram.buckets[int(name[1:])] = int(value)
        return totals


def _histogram_family(
    name: str,
    documentation: str,
    series: Iterable[tuple[tuple[str, ...], _Histogram]],
    bounds: Sequence[float],
    labels: Sequence[str],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for label_values, histogram in series:
        cumulative, buckets = 0, []
        for bound, count in zip([*bounds, float("inf")], histogram.buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
        family.add_metric(list(label_values), buckets, histogram.sum)
    return family


async def collect(ctx: AppContext, timings: TaskTimings) -> list[Metric]:
    """The metric families of one scrape."""
    t = task_table.c
    async with ctx.db.read() as conn:
        by_job = (
            await conn.execute(
                select(t.job_name, t.status, func.count()).group_by(t.job_name, t.status)
            )
        ).all()
        worker_count = (
            await conn.execute(select(func.count()).select_from(worker_table))
        ).scalar_one()
    tasks_family = GaugeMetricFamily(
        "joblib_tasks", "Tasks in the database by job and status", labels=["job", "status"]
    )
    for job_name, status, count in sorted(tuple(row) for row in by_job):
        tasks_family.add_metric([job_name, status], count)
    workers_family = GaugeMetricFamily("joblib_workers", "Registered workers")
    workers_family.add_metric([], worker_count)
    totals = await timings.totals()
    queue = _histogram_family(
        "joblib_task_queue_seconds",
        "Seconds from submit to claim",
        [((), totals["queue", None])],
        QUEUE_BUCKETS,
        [],
    )
    run = _histogram_family(
        "joblib_task_run_seconds",
        "Seconds from start (running) to the terminal status",
        [((status,), totals["run", status]) for status in _TERMINAL],
        RUN_BUCKETS,
        ["status"],
    )
    return [tasks_family, workers_family, queue, run]


class _Families:
    """A collector over families already gathered (the gathering is async)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


async def metrics_endpoint(request: Request) -> Response:
    """Superusers, or whoever the config's ``metrics_access`` lets in."""
    ctx: AppContext = request.app.state.joblib
    access = ctx.config.metrics_access
    if access is None or not await access(request):
        principal = await authenticate(request, ctx)
        if not principal.is_superuser:
            raise Forbidden("Reading the metrics requires a superuser")
    timings: TaskTimings = ctx.extras["task_timings"]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(await collect(ctx, timings)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
