"""Where the example scripts find the server: ``examples/host_app.py`` by default.

Override with ``JOBLIB_URL``, ``JOBLIB_TOKEN`` and ``JOBLIB_ROOM``.
"""

import os

URL = os.environ.get("JOBLIB_URL", "http://127.0.0.1:8000/v1/joblib")
TOKEN = os.environ.get("JOBLIB_TOKEN", "user-token")
ROOM = os.environ.get("JOBLIB_ROOM", "demo")
