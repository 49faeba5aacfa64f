"""A worker process for the tests.

Run as ``python -m tests.acceptance.client.worker_main --url ... --room ...``.

Prints ``READY <worker_id>`` once registered and ``EXIT <reason>`` when leaving, so the
test can synchronise on its output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from joblib_app.client import ClaimedTask, JobManager
from tests.acceptance.client.jobs import JOBS, FileBytes, FileNames


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="user:alice")
    parser.add_argument("--room", required=True)
    parser.add_argument("--mode", choices=["auto", "listen", "provider"], default="auto")
    parser.add_argument("--jobs", default="Echo,Boom,Gate")
    parser.add_argument("--no-socketio", action="store_true")
    parser.add_argument("--claim-wait", type=float, default=25.0)
    parser.add_argument("--polling-interval", type=float, default=2.0)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--max-unreachable", type=float, default=60.0)
    parser.add_argument("--provider-dir", default=".")
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")

    def execute(task: ClaimedTask[Any]) -> object:
        return task.run()

    manager = JobManager(
        args.url,
        token=args.token,
        execute=execute if args.mode == "auto" else None,
        use_socketio=not args.no_socketio,
        heartbeat_interval=args.heartbeat,
        claim_wait_seconds=args.claim_wait,
        polling_interval=args.polling_interval,
        max_unreachable_seconds=args.max_unreachable,
        concurrency=args.concurrency,
    )
    with manager:
        if args.mode == "provider":
            root = Path(args.provider_dir)
            manager.register_provider(FileBytes, name="bytes", handler=root, room=args.room)
            manager.register_provider(FileNames, name="names", handler=root, room=args.room)
        else:
            for name in args.jobs.split(","):
                manager.register(JOBS[name], room=args.room, run_kwargs={"greeting": "hello"})
        print(f"READY {manager.worker_id}", flush=True)
        if args.mode == "listen":
            for task in manager.listen():
                manager.start(task)
                try:
                    task.run()
                except Exception as exc:
                    manager.fail(task, str(exc))
                else:
                    manager.complete(task)
        else:
            manager.wait()
    print(f"EXIT {manager.stop_reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
