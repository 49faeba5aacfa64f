"""Submit a task that reports progress, and follow it until it ends.

    python examples/progress.py [SECONDS]

Needs ``worker_auto.py`` (it serves ``Countdown``). Progress is in the task JSON
(``progress``, ``progress_message``) and in each ``task_status_event`` of the room.
"""

import sys

from _settings import ROOM, TOKEN, URL
from shapes import Countdown

from joblib_app.client import JobManager


def main() -> int:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with JobManager(URL, token=TOKEN, use_socketio=False) as client:
        handle = client.submit(Countdown(seconds=seconds, step=0.5), room=ROOM, job_room=ROOM)
        last = None
        while (task := handle.status())["status"] not in ("completed", "failed", "cancelled"):
            if task["version"] != last:
                last = task["version"]
                print(f"{task['status']:9} {task['progress'] or 0:5.0%} {task['progress_message']}")
            try:
                # Returns early when the task ends; otherwise look again in 0.5 s.
                handle.wait(timeout=0.5)
            except TimeoutError:
                continue
        print(f"{task['status']}: {task['result']}")
        return 0 if task["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
