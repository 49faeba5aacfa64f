"""A standalone taskiq worker for the example host's ``@internal`` jobs.

The host enqueues ``@internal`` tasks on Redis when started with a Redis broker; this
process runs them and reports each status change over REST with the admin token (internal
tasks belong to no worker, so only a superuser may update them). From the repository root::

    export JOBLIB_BROKER_REDIS_URL=redis://127.0.0.1:6379/0
    python examples/host_app.py                                  # the server
    taskiq worker examples.internal_worker:broker --workers 1    # one or more workers

then submit ``@internal:analysis:Echo``, e.g.::

    curl -X POST -H 'Authorization: Bearer user-token' -H 'Content-Type: application/json' \\
        -d '{"payload": {"text": "hi"}}' \\
        http://127.0.0.1:8000/v1/joblib/rooms/demo/tasks/@internal:analysis:Echo

``JOBLIB_URL`` overrides where the sub-app is mounted (default
``http://127.0.0.1:8000/v1/joblib``). The worker needs no database and no FastAPI app.
"""

from __future__ import annotations

import os

from examples.host_app import ADMIN_TOKEN, Echo, internal_broker
from joblib_app import register_internal_tasks, rest_executor

URL = os.environ.get("JOBLIB_URL", "http://127.0.0.1:8000/v1/joblib")

_broker = internal_broker()
if _broker is None:
    raise SystemExit("Set JOBLIB_BROKER_REDIS_URL (the same Redis as the server's broker)")
broker = _broker
register_internal_tasks(broker, [Echo], rest_executor(URL, token=ADMIN_TOKEN))
