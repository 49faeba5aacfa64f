"""A worker driving its own loop with ``listen()``: claim, start, run, report.

    python examples/worker_listen.py

Ctrl-C or SIGTERM stops it: a task in flight is finished first; an idle long-poll is
abandoned at once. The context manager then deletes the worker.
"""

import logging
import signal
import threading
from types import FrameType

from _settings import ROOM, TOKEN, URL
from shapes import Rotate, Stats

from joblib_app.client import JobManager

log = logging.getLogger("worker_listen")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    busy = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if not busy.is_set():
            # Idle in the claim long-poll: nothing to finish, leave now.
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    with JobManager(URL, token=TOKEN) as manager:
        manager.register(Rotate, room=ROOM)
        manager.register(Stats, room=ROOM)
        log.info("worker %s listening", manager.worker_id)
        try:
            for task in manager.listen(stop):
                busy.set()
                manager.start(task)
                try:
                    result = task.run()
                except Exception as exc:
                    manager.fail(task, f"{type(exc).__name__}: {exc}")
                    log.warning("%s failed: %s", task.task_id, exc)
                else:
                    manager.complete(task)
                    log.info("%s -> %s", task.job_name, result)
                finally:
                    busy.clear()
        except KeyboardInterrupt:
            pass
        log.info("stopping")


if __name__ == "__main__":
    main()
