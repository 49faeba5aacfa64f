"""A worker process for the kill tests: register, take a task to running, wait to be killed.

Usage: ``python worker_proc.py <joblib base URL> <room id> <http|socketio>``. Prints one JSON
line ``{"worker_id", "job", "task_id"}`` once the task is running, then blocks on stdin.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import urlsplit

import httpx
import socketio

TOKEN = "user:killed"


def main() -> None:
    base, room_id, mode = sys.argv[1:4]
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    job = api.put(
        f"/rooms/{room_id}/jobs", json={"category": "modifiers", "name": "Doomed", "schema": {}}
    ).json()
    worker_id = job["worker_id"]
    if mode == "socketio":
        url = urlsplit(base)
        sio = socketio.Client(reconnection=False)
        sio.connect(
            f"{url.scheme}://{url.netloc}",
            socketio_path=url.path.strip("/") + "/socket.io",
            transports=["websocket"],
            auth={"token": TOKEN},
        )
        answer = sio.call("join_job_room", {"job_name": job["full_name"], "worker_id": worker_id})
        assert answer == {"status": "ok"}, answer
    api.post(f"/rooms/{room_id}/tasks/{job['full_name']}", json={"payload": {}}).raise_for_status()
    task = api.post("/tasks/claim", json={"worker_id": worker_id}).json()["task"]
    api.patch(f"/tasks/{task['id']}", json={"status": "running"}).raise_for_status()
    print(json.dumps({"worker_id": worker_id, "job": job["full_name"], "task_id": task["id"]}))
    sys.stdout.flush()
    # Hold everything open until the test kills this process.
    sys.stdin.read()


if __name__ == "__main__":
    main()
