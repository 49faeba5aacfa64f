"""The host app the acceptance tests serve with uvicorn, configured by environment.

JOBLIB_TEST_DATABASE_URL   database (required)
JOBLIB_TEST_REDIS_URL      enables Redis (notifier, Socket.IO manager, result backend)
JOBLIB_TEST_REDIS_PREFIX   key prefix
JOBLIB_TEST_MOUNT          mount path (default /v1/joblib)
JOBLIB_TEST_LIFESPAN       "1" (default) passes joblib.lifespan to the host, "0" does not
JOBLIB_TEST_INTERNAL       "1" registers the internal test extensions
JOBLIB_TEST_BROKER_REDIS   with a Redis URL: taskiq ListQueueBroker on that Redis
JOBLIB_TEST_READ_GUARD     "1": can_read_room lets only superusers follow rooms named secret-*
JOBLIB_TEST_ROOMS_CLEANED_LOG  a file path: on_rooms_cleaned appends each room id to it, one a line
JOBLIB_TEST_METRICS_TOKEN  a bearer token that may read /metrics (a scraper's)
ZNDRAW_JOBLIB_*            settings

Tokens: ``admin`` (superuser), and any ``user:<name>`` token is the principal <name>, sent
as a bearer header or as the ``joblib_token`` cookie (a browser's).
"""

from __future__ import annotations

import asyncio
import logging
import os

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from joblib_app import JoblibConfig, Principal, create_joblib_app
from joblib_app.auth import bearer_token

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


async def authenticate(conn: HTTPConnection) -> Principal | None:
    token = bearer_token(conn) or conn.cookies.get("joblib_token")
    if token == "admin":
        return Principal("admin", is_superuser=True)
    if token and token.startswith("user:") and len(token) > 5:
        return Principal(token[5:])
    return None


async def can_read_room(principal: Principal, room_id: str) -> bool:
    return principal.is_superuser or not room_id.startswith("secret-")


async def metrics_access(conn: HTTPConnection) -> bool:
    return bearer_token(conn) == os.environ["JOBLIB_TEST_METRICS_TOKEN"]


def _append_rooms(room_ids: list[str]) -> None:
    with open(os.environ["JOBLIB_TEST_ROOMS_CLEANED_LOG"], "a", encoding="utf-8") as log:
        log.writelines(f"{room_id}\n" for room_id in room_ids)


async def log_rooms_cleaned(room_ids: list[str]) -> None:
    await asyncio.to_thread(_append_rooms, room_ids)


def _broker():
    url = os.environ.get("JOBLIB_TEST_BROKER_REDIS")
    if not url:
        return None
    from tests.internal_jobs import make_redis_broker

    return make_redis_broker(url, os.environ["JOBLIB_TEST_REDIS_PREFIX"])


def _internal_jobs() -> list:
    if os.environ.get("JOBLIB_TEST_INTERNAL") != "1":
        return []
    from tests.internal_jobs import INTERNAL_EXTENSIONS

    return list(INTERNAL_EXTENSIONS)


redis_url = os.environ.get("JOBLIB_TEST_REDIS_URL") or None
joblib = create_joblib_app(
    JoblibConfig(
        authenticate=authenticate,
        database_url=os.environ["JOBLIB_TEST_DATABASE_URL"],
        redis_url=redis_url,
        redis_key_prefix=os.environ.get("JOBLIB_TEST_REDIS_PREFIX", "joblib:"),
        internal_jobs=_internal_jobs(),
        broker=_broker(),
        can_read_room=can_read_room if os.environ.get("JOBLIB_TEST_READ_GUARD") == "1" else None,
        on_rooms_cleaned=(
            log_rooms_cleaned if os.environ.get("JOBLIB_TEST_ROOMS_CLEANED_LOG") else None
        ),
        metrics_access=metrics_access if os.environ.get("JOBLIB_TEST_METRICS_TOKEN") else None,
    )
)
use_lifespan = os.environ.get("JOBLIB_TEST_LIFESPAN", "1") == "1"
app = FastAPI(lifespan=joblib.lifespan if use_lifespan else None)
app.mount(os.environ.get("JOBLIB_TEST_MOUNT", "/v1/joblib"), joblib)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/joblib-waiters/{channel:path}")
async def waiters(channel: str) -> dict[str, int]:
    """Long-polls of this process waiting on a notifier channel (``task:{id}``, ``job:{name}``),
    so tests can act once a waiter is provably waiting instead of sleeping."""
    return {"count": joblib.context.notifier.listener_count(channel)}


@app.get("/joblib-started")
async def started() -> dict[str, bool]:
    return {"started": joblib.started}
