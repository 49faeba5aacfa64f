"""A standalone ``taskiq worker`` process for the internal-job tests.

Run as ``python -m taskiq worker tests.support.internal_worker_app:broker --workers 1``. It has no
FastAPI app and no database: it reports to the server over REST with the superuser token.

JOBLIB_TEST_BROKER_REDIS     Redis URL of the broker
JOBLIB_TEST_REDIS_PREFIX     the key prefix the server uses (the queue name derives from it)
JOBLIB_TEST_WORKER_BASE_URL  where the sub-app is mounted, e.g. http://127.0.0.1:8000/v1/joblib
"""

from __future__ import annotations

import logging
import os

from joblib_app import register_internal_tasks, rest_executor
from tests.support.internal_jobs import INTERNAL_EXTENSIONS, make_redis_broker

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

broker = make_redis_broker(
    os.environ["JOBLIB_TEST_BROKER_REDIS"], os.environ["JOBLIB_TEST_REDIS_PREFIX"]
)
registry = register_internal_tasks(
    broker,
    INTERNAL_EXTENSIONS,
    rest_executor(os.environ["JOBLIB_TEST_WORKER_BASE_URL"], token="admin"),
)
