"""Submit one task and wait for its end with the server's long-poll.

    python examples/submit_and_wait.py [ANGLE]

Needs a worker serving ``Rotate`` (``worker_auto.py`` or ``worker_listen.py``).
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
        task_id = client.submit(Rotate(angle=angle), room=ROOM, job_room=ROOM)
        print(f"submitted {task_id}")
        task = client.wait_for_task(task_id, timeout=60)
        elapsed = time.perf_counter() - began
        print(
            f"{task['status']} after {elapsed * 1000:.1f} ms"
            + (f": {task['error']}" if task["error"] else "")
        )
        return 0 if task["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
