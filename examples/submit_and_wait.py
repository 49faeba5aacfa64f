"""Submit one task and wait for its end with the server's long-poll.

    python examples/submit_and_wait.py [ANGLE]

Needs a worker serving ``Rotate`` (``worker_auto.py``). Prints the task's result: what the
worker's ``execute`` returned.
"""

import sys
import time

from _settings import ROOM, TOKEN, URL
from shapes import Rotate

from joblib_app.client import JobManager


def main() -> int:
    angle = float(sys.argv[1]) if len(sys.argv) > 1 else 90.0
    # A submitter needs neither a worker nor Socket.IO.
    with JobManager(URL, token=TOKEN, use_socketio=False) as client:
        began = time.perf_counter()
        handle = client.submit(Rotate(angle=angle), room=ROOM, job_room=ROOM)
        print(f"submitted {handle}")
        task = handle.wait(timeout=60)
        elapsed = time.perf_counter() - began
        print(
            f"{task['status']} after {elapsed * 1000:.1f} ms"
            + (f": {task['error']}" if task["error"] else "")
        )
        if task["status"] != "completed":
            return 1
        print(f"result: {task['result']}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
