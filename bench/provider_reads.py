"""Provider read path: cache-hit throughput and the miss round trip, per result backend.

Run from the repository root (Redis on 127.0.0.1:6379 for the ``redis`` backend)::

    python bench/provider_reads.py [--backend memory|redis|both] [--hits 2000]
                                   [--concurrency 10] [--misses 200] [--rounds 5]

For each backend it serves ``tests.support.host:app`` with uvicorn (SQLite; with Redis: notifier,
Socket.IO manager and result backend on Redis), registers a provider and connects a
python-socketio client that answers every ``provider_request`` at once. Then, in one run:

* cache hits: reads per second of one cached result from ``--concurrency`` clients, against
  a trivial host endpoint (``GET /health``) at the same concurrency, in ``--rounds`` paired
  rounds (one of each, back to back); the median of the rounds' ratios damps a shared
  machine's noise. Target: hits >= 0.7 x /health.
* misses: ``--misses`` sequential reads of new parameters, each a full round trip
  (read -> provider_request -> upload -> answer); p50 and p95. Target: p50 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.api import Api
from tests.support.names import new_room, unique
from tests.support.providers import FakeProvider, serve_providers
from tests.support.services import REDIS_URL, port_open

HIT_TARGET = 0.7
MISS_P50_TARGET_MS = 20.0


async def rate(http: httpx.AsyncClient, url: str, count: int, concurrency: int) -> float:
    """Requests per second of ``count`` GETs of ``url``, ``concurrency`` in flight."""
    remaining = count

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await http.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]}")

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return count / (time.perf_counter() - start)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, float]:
    redis_url = REDIS_URL if backend == "redis" else None
    with (
        tempfile.TemporaryDirectory() as workdir,
        serve_providers(Path(workdir), redis_url=redis_url) as srv,
    ):
        limits = httpx.Limits(max_connections=args.concurrency)
        headers = {"Authorization": "Bearer user:alice"}
        async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as http:
            api = Api(http, srv)
            room = new_room()
            provider = await api.register_provider(room, unique(), category="data")
            answer = b'{"positions":[[0,0,0],[1,1,1]],"numbers":[1,8]}'
            async with FakeProvider(srv, provider, answer=lambda _: answer):
                read_url = f"{srv.base}/rooms/{room}/providers/{provider['full_name']}"
                hit_url = f"{read_url}?frame=0"
                first = await http.get(hit_url, headers={"Prefer": "wait=10"})
                assert first.status_code == 200 and first.content == answer, first.text
                health_url = f"{srv.origin}/health"
                # Warm both paths (connections, caches) before timing.
                await rate(http, health_url, 200, args.concurrency)
                await rate(http, hit_url, 200, args.concurrency)
                health, hits = [], []
                for _ in range(args.rounds):
                    health.append(await rate(http, health_url, args.hits, args.concurrency))
                    hits.append(await rate(http, hit_url, args.hits, args.concurrency))
                # Paired rounds: each ratio compares two runs made moments apart.
                ratios = [hit / base for hit, base in zip(hits, health, strict=True)]

                latencies = []
                for i in range(args.misses):
                    start = time.perf_counter()
                    response = await http.get(
                        read_url, params={"frame": f"m{i}"}, headers={"Prefer": "wait=10"}
                    )
                    latencies.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, response.text
    return {
        "health_rps": statistics.median(health),
        "hit_rps": statistics.median(hits),
        "ratio": statistics.median(ratios),
        "miss_p50_ms": statistics.median(latencies),
        "miss_p95_ms": percentile(latencies, 0.95),
    }


def report(backend: str, result: dict[str, float], args: argparse.Namespace) -> bool:
    hit_ok = result["ratio"] >= HIT_TARGET
    miss_ok = result["miss_p50_ms"] < MISS_P50_TARGET_MS
    print(f"[{backend}] concurrency {args.concurrency}")
    print(f"  GET /health          {result['health_rps']:8.0f} req/s (median of rounds)")
    print(
        f"  cache-hit reads      {result['hit_rps']:8.0f} req/s; median ratio "
        f"{result['ratio']:.2f} x /health"
        f"  (target >= {HIT_TARGET}: {'ok' if hit_ok else 'MISSED'})"
    )
    print(
        f"  miss round trip      p50 {result['miss_p50_ms']:.1f} ms, "
        f"p95 {result['miss_p95_ms']:.1f} ms over {args.misses} reads"
        f"  (target p50 < {MISS_P50_TARGET_MS:g} ms: {'ok' if miss_ok else 'MISSED'})"
    )
    return hit_ok and miss_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=("memory", "redis", "both"), default="both")
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--misses", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    backends = ("memory", "redis") if args.backend == "both" else (args.backend,)
    if "redis" in backends and not port_open("127.0.0.1", 6379):
        print("Redis is not reachable on 127.0.0.1:6379", file=sys.stderr)
        return 2
    ok = True
    for backend in backends:
        ok = report(backend, asyncio.run(bench_backend(backend, args)), args) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
