"""The joblib app served on its own, as the server's top-level app (no host, no mount).

Its own lifespan starts and stops the system. ``GET /health``, added to it as a host would,
lets the test server wait for it.
"""

from __future__ import annotations

import logging
import os

from starlette.requests import HTTPConnection

from joblib_app import JoblibConfig, Principal, create_joblib_app
from joblib_app.auth import bearer_token

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


async def authenticate(conn: HTTPConnection) -> Principal | None:
    token = bearer_token(conn)
    if token and token.startswith("user:") and len(token) > 5:
        return Principal(token[5:])
    return None


joblib = create_joblib_app(
    JoblibConfig(authenticate=authenticate, database_url=os.environ["JOBLIB_TEST_DATABASE_URL"])
)


@joblib.get("/health", include_in_schema=False)
async def health() -> dict[str, bool]:
    return {"started": joblib.started}
