"""The host app the client tests serve under uvicorn.

Reads ``JOBLIB_TEST_DATABASE_URL``; tunables come from ``ZNDRAW_JOBLIB_*`` variables.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from joblib_app import JoblibConfig, create_joblib_app
from joblib_app.auth import static_token_authenticator
from joblib_app.principal import Principal

TOKENS = {
    "alice-token": Principal("alice"),
    "bob-token": Principal("bob"),
    "admin-token": Principal("admin", is_superuser=True),
}

joblib = create_joblib_app(
    JoblibConfig(
        authenticate=static_token_authenticator(TOKENS),
        database_url=os.environ.get("JOBLIB_TEST_DATABASE_URL", "sqlite+aiosqlite:///./joblib.db"),
    )
)
app = FastAPI(lifespan=joblib.lifespan)
app.mount("/v1/joblib", joblib)
