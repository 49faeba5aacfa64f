"""The host app the acceptance tests serve with uvicorn, configured by environment.

JOBLIB_TEST_DATABASE_URL   database (required)
JOBLIB_TEST_REDIS_URL      enables Redis (notifier, Socket.IO manager, result backend)
JOBLIB_TEST_REDIS_PREFIX   key prefix
JOBLIB_TEST_MOUNT          mount path (default /v1/joblib)
JOBLIB_TEST_LIFESPAN       "1" (default) passes joblib.lifespan to the host, "0" does not
JOBLIB_TEST_INTERNAL       "1" registers the internal test extensions
JOBLIB_TEST_BROKER_REDIS   with a Redis URL: taskiq ListQueueBroker on that Redis
ZNDRAW_JOBLIB_*            settings

Tokens: ``admin`` (superuser), and any ``user:<name>`` token is the principal <name>.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from joblib_app import JoblibConfig, Principal, create_joblib_app
from joblib_app.auth import bearer_token

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


async def authenticate(conn: HTTPConnection) -> Principal | None:
    token = bearer_token(conn)
    if token == "admin":
        return Principal("admin", is_superuser=True)
    if token and token.startswith("user:") and len(token) > 5:
        return Principal(token[5:])
    return None


def _broker():  # noqa: ANN202
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
    )
)
use_lifespan = os.environ.get("JOBLIB_TEST_LIFESPAN", "1") == "1"
app = FastAPI(lifespan=joblib.lifespan if use_lifespan else None)
app.mount(os.environ.get("JOBLIB_TEST_MOUNT", "/v1/joblib"), joblib)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/joblib-started")
async def started() -> dict[str, bool]:
    return {"started": joblib.started}
