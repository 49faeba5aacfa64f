"""Start a long task, cancel it, and show how quickly its worker stopped.

    python examples/cancel.py

Needs ``worker_auto.py`` (it serves ``Countdown``). With Socket.IO the worker hears
``task_cancel_requested`` at once; without, the answer to its next progress report says
``cancelled``. Either way ``task.cancelled`` is set and ``Countdown.run`` returns.
"""

import sys
import time

from _settings import ROOM, TOKEN, URL
from shapes import Countdown

from joblib_app.client import JobManager, TaskCancelled


def main() -> int:
    with JobManager(URL, token=TOKEN, use_socketio=False) as client:
        handle = client.submit(Countdown(seconds=30, step=5.0), room=ROOM, job_room=ROOM)
        deadline = time.monotonic() + 30
        while handle.status()["status"] != "running":
            if time.monotonic() > deadline:
                print("the task never started: is worker_auto.py running?")
                return 1
            time.sleep(0.1)
        began = time.perf_counter()
        handle.cancel()
        print(f"cancelled {handle}")
        try:
            handle.result(timeout=10)
        except TaskCancelled:
            print(f"status cancelled, answered in {(time.perf_counter() - began) * 1000:.1f} ms")
            print("the worker log shows the task stopping at once, not after 30 s")
            return 0
        print("the task finished before the cancel arrived")
        return 1


if __name__ == "__main__":
    sys.exit(main())
