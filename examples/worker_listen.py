"""A worker driving its own loop with ``listen()``: claim, start, run, report.

    python examples/worker_listen.py

Ctrl-C leaves the loop; the context manager deletes the worker.
"""

import logging

from _settings import ROOM, TOKEN, URL
from shapes import Rotate, Stats

from joblib_app.client import JobManager

log = logging.getLogger("worker_listen")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with JobManager(URL, token=TOKEN) as manager:
        manager.register(Rotate, room=ROOM)
        manager.register(Stats, room=ROOM)
        log.info("worker %s listening", manager.worker_id)
        try:
            for task in manager.listen():
                manager.start(task)
                try:
                    result = task.run()
                except Exception as exc:
                    manager.fail(task, f"{type(exc).__name__}: {exc}")
                    log.warning("%s failed: %s", task.task_id, exc)
                else:
                    manager.complete(task)
                    log.info("%s -> %s", task.job_name, result)
        except KeyboardInterrupt:
            log.info("stopping")


if __name__ == "__main__":
    main()
