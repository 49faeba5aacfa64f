"""A worker serving three extensions in auto-serve mode, two tasks at a time.

Start the server (``python examples/host_app.py``), then::

    python examples/worker_auto.py

Submit tasks with ``python examples/submit_and_wait.py``, ``progress.py`` or ``cancel.py``;
Ctrl-C stops the worker once the tasks in flight have finished.
"""

import logging

from _settings import ROOM, TOKEN, URL
from shapes import Countdown, Rotate, Stats

from joblib_app.client import ClaimedTask, JobManager

log = logging.getLogger("worker_auto")


def execute(task: ClaimedTask) -> object:
    """Run the task: what it returns is the task's result; an exception fails the task."""
    result = task.run()
    log.info("%s -> %s", task.job_name, result)
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with JobManager(URL, token=TOKEN, execute=execute, concurrency=2) as manager:
        manager.register(Rotate, room=ROOM)
        manager.register(Countdown, room=ROOM)
        manager.register(Stats, room=ROOM, run_kwargs={"source": "worker_auto"})
        log.info("worker %s serving %s", manager.worker_id, list(manager))
        manager.wait()


if __name__ == "__main__":
    main()
