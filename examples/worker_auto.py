"""A worker serving two extensions in auto-serve mode.

Start the server (``python examples/host_app.py``), then::

    python examples/worker_auto.py

Submit tasks with ``python examples/submit_and_wait.py``; Ctrl-C stops the worker once the
task in flight has finished.
"""

import logging

from _settings import ROOM, TOKEN, URL
from shapes import Rotate, Stats

from joblib_app.client import ClaimedTask, JobManager

log = logging.getLogger("worker_auto")


def execute(task: ClaimedTask) -> None:
    """Run the task; an exception here fails the task with its message."""
    log.info("%s -> %s", task.job_name, task.run())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with JobManager(URL, token=TOKEN, execute=execute) as manager:
        manager.register(Rotate, room=ROOM)
        manager.register(Stats, room=ROOM, run_kwargs={"source": "worker_auto"})
        log.info("worker %s serving %s", manager.worker_id, list(manager))
        manager.wait()


if __name__ == "__main__":
    main()
