"""A FastAPI host with joblib-app mounted at /v1/joblib, on the embedded default.

Run:  python examples/host_app.py   (then open http://127.0.0.1:8000/v1/joblib/docs)

The dashboard: open http://127.0.0.1:8000/login?token=admin-token, which sets the
``joblib_token`` cookie that ``authenticate`` also accepts and opens /v1/joblib/dashboard.

Environment (all optional): JOBLIB_HOST, JOBLIB_PORT, JOBLIB_DATABASE_URL (default: SQLite
file ./joblib.db), JOBLIB_REDIS_URL (enables Redis for multi-process deployments),
JOBLIB_BROKER_REDIS_URL (runs the ``@internal`` jobs in separate taskiq workers, see
``examples/internal_worker.py``, instead of inside the server), JOBLIB_ADMIN_TOKEN,
JOBLIB_USER_TOKEN.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.requests import HTTPConnection
from taskiq import AsyncBroker

from joblib_app import (
    Extension,
    JoblibConfig,
    Principal,
    create_joblib_app,
    static_token_authenticator,
)
from joblib_app.config import DEFAULT_DATABASE_URL

ADMIN_TOKEN = os.environ.get("JOBLIB_ADMIN_TOKEN", "admin-token")
USER_TOKEN = os.environ.get("JOBLIB_USER_TOKEN", "user-token")
HOST = os.environ.get("JOBLIB_HOST", "127.0.0.1")
PORT = int(os.environ.get("JOBLIB_PORT", "8000"))


class Echo(Extension):
    """An ``@internal`` job the server runs itself (through taskiq's in-memory broker)."""

    category = "analysis"
    text: str = "hello"

    def run(self, vis: object, **kwargs: object) -> str:
        logging.getLogger("host_app").info("Echo: %s", self.text)
        return self.text


def internal_broker() -> AsyncBroker | None:
    """The taskiq broker of the ``@internal`` jobs: Redis when configured, else in process.

    A list queue (``RedisListBroker``: taskiq-redis's ``ListQueueBroker`` with bounded
    Redis calls) stops promptly and needs no consumer group; it has no acknowledgements,
    so a task lost with a killed worker is failed by the sweeper after
    ``internal_task_timeout_seconds``.
    """
    url = os.environ.get("JOBLIB_BROKER_REDIS_URL")
    if not url:
        return None
    from joblib_app import RedisListBroker

    return RedisListBroker(url, queue_name="joblib:internal")


PRINCIPALS = {
    ADMIN_TOKEN: Principal("admin", is_superuser=True),
    USER_TOKEN: Principal("user"),
}
by_header = static_token_authenticator(PRINCIPALS)


async def authenticate(conn: HTTPConnection) -> Principal | None:
    """A bearer header (workers, curl) or the ``joblib_token`` cookie (a browser)."""
    principal = await by_header(conn)
    if principal is None:
        principal = PRINCIPALS.get(conn.cookies.get("joblib_token", ""))
    return principal


joblib = create_joblib_app(
    JoblibConfig(
        authenticate=authenticate,
        database_url=os.environ.get("JOBLIB_DATABASE_URL", DEFAULT_DATABASE_URL),
        redis_url=os.environ.get("JOBLIB_REDIS_URL") or None,
        internal_jobs=[Echo],
        broker=internal_broker(),
    )
)
app = FastAPI(title="joblib-app example host", lifespan=joblib.lifespan)
app.mount("/v1/joblib", joblib)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/login")
async def login(token: str) -> RedirectResponse:
    """Set the dashboard's cookie (an example: a real host has its own login)."""
    response = RedirectResponse("/v1/joblib/dashboard", status_code=303)
    response.set_cookie("joblib_token", token[:200], httponly=True, samesite="strict")
    return response


if __name__ == "__main__":
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    base = f"http://{HOST}:{PORT}/v1/joblib"
    print(f"joblib-app mounted at {base}  (API docs: {base}/docs)")
    print(f"  dashboard: http://{HOST}:{PORT}/login?token={ADMIN_TOKEN}")
    print(f"  admin token (superuser): {ADMIN_TOKEN}")
    print(f"  user token:              {USER_TOKEN}")
    print(f"  e.g. curl -H 'Authorization: Bearer {USER_TOKEN}' {base}/rooms/demo/jobs")
    uvicorn.run(app, host=HOST, port=PORT, timeout_graceful_shutdown=2)
