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
JOBLIB_TEST_SCOPE_AUTH     "1": a middleware puts the ``X-Test-User`` header into ``scope["user"]``
                           and ``authenticate`` trusts that scope value first (as hosts with an
                           auth middleware do)
JOBLIB_TEST_SERVE_GUARD    "1": can_serve_job lets only <user> (or a superuser) serve jobs of
                           rooms named private-<user>-*
JOBLIB_TEST_SIO_ORIGINS    JSON: socketio_cors_allowed_origins
JOBLIB_TEST_METRICS_TOKEN  a bearer token that may read /metrics (a scraper's)
ZNDRAW_JOBLIB_*            settings

Tokens: ``admin`` (superuser), and any ``user:<name>`` token is the principal <name>, sent
as a bearer header or as the ``joblib_token`` cookie (a browser's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from fastapi import FastAPI
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from taskiq import AsyncBroker

from joblib_app import JoblibConfig, Principal, create_joblib_app
from joblib_app.auth import bearer_token
from joblib_app.providers.memory import InMemoryResultBackend
from joblib_app.providers.redis_backend import RedisResultBackend

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


async def authenticate(conn: HTTPConnection) -> Principal | None:
    scope_user = conn.scope.get("user") if SCOPE_AUTH else None
    if isinstance(scope_user, str) and scope_user:
        return Principal(scope_user, is_superuser=scope_user == "admin")
    token = bearer_token(conn) or conn.cookies.get("joblib_token")
    if token == "admin":
        return Principal("admin", is_superuser=True)
    if token and token.startswith("user:") and len(token) > 5:
        return Principal(token[5:])
    return None


async def can_read_room(principal: Principal, room_id: str) -> bool:
    return principal.is_superuser or not room_id.startswith("secret-")


async def can_serve_job(principal: Principal, room_id: str, job_full_name: str) -> bool:
    if principal.is_superuser or not room_id.startswith("private-"):
        return True
    return room_id.startswith(f"private-{principal.id}-")


class ScopeUser:
    """An auth middleware in miniature: the ``X-Test-User`` header becomes ``scope["user"]``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            for name, value in scope.get("headers", ()):
                if name == b"x-test-user":
                    scope = {**scope, "user": value.decode("latin-1")}
        await self.app(scope, receive, send)


async def metrics_access(conn: HTTPConnection) -> bool:
    return bearer_token(conn) == os.environ["JOBLIB_TEST_METRICS_TOKEN"]


def _append_rooms(room_ids: list[str]) -> None:
    with open(os.environ["JOBLIB_TEST_ROOMS_CLEANED_LOG"], "a", encoding="utf-8") as log:
        log.writelines(f"{room_id}\n" for room_id in room_ids)


async def log_rooms_cleaned(room_ids: list[str]) -> None:
    await asyncio.to_thread(_append_rooms, room_ids)


def _broker() -> AsyncBroker | None:
    url = os.environ.get("JOBLIB_TEST_BROKER_REDIS")
    if not url:
        return None
    from tests.support.internal_jobs import make_redis_broker

    return make_redis_broker(url, os.environ["JOBLIB_TEST_REDIS_PREFIX"])


def _internal_jobs() -> list[Any]:
    if os.environ.get("JOBLIB_TEST_INTERNAL") != "1":
        return []
    from tests.support.internal_jobs import INTERNAL_EXTENSIONS

    return list(INTERNAL_EXTENSIONS)


SCOPE_AUTH = os.environ.get("JOBLIB_TEST_SCOPE_AUTH") == "1"
redis_url = os.environ.get("JOBLIB_TEST_REDIS_URL") or None
sio_origins = os.environ.get("JOBLIB_TEST_SIO_ORIGINS")
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
        can_serve_job=can_serve_job if os.environ.get("JOBLIB_TEST_SERVE_GUARD") == "1" else None,
        metrics_access=metrics_access if os.environ.get("JOBLIB_TEST_METRICS_TOKEN") else None,
        # Only when asked: without it the config's default is what is served.
        **({"socketio_cors_allowed_origins": json.loads(sio_origins)} if sio_origins else {}),
    )
)
use_lifespan = os.environ.get("JOBLIB_TEST_LIFESPAN", "1") == "1"
app = FastAPI(lifespan=joblib.lifespan if use_lifespan else None)
app.mount(os.environ.get("JOBLIB_TEST_MOUNT", "/v1/joblib"), joblib)
if SCOPE_AUTH:
    app.add_middleware(ScopeUser)


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


@app.get("/joblib-cache-bytes")
async def cache_bytes() -> dict[str, int]:
    """Bytes the in-memory provider result cache holds now."""
    backend = joblib.context.result_backend
    assert isinstance(backend, InMemoryResultBackend)
    return {"bytes": backend.stored_bytes}


@app.get("/joblib-key-waiters/{key:path}")
async def key_waiters(key: str) -> dict[str, int]:
    """Provider reads of this process waiting for result-backend ``key``, so tests can act
    once readers are provably waiting (reaches into the two backends the tests use)."""
    backend = joblib.context.result_backend
    if isinstance(backend, InMemoryResultBackend):
        return {"count": len(backend._waiters.get(key, ()))}
    assert isinstance(backend, RedisResultBackend)
    return {"count": backend._notifier.listener_count(backend._prefix + key)}
