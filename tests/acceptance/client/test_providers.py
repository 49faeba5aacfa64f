"""A provider worker answering reads through the server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.acceptance.client.processes import WorkerProcess
from tests.support.server import ServerProcess

Spawn = Callable[..., WorkerProcess]


def test_provider_answers_binary_and_json_reads(
    server: ServerProcess, spawn_worker: Spawn, room: str, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 4
    (tmp_path / "a.bin").write_bytes(payload)
    (tmp_path / "b.txt").write_text("hello")
    worker = spawn_worker(
        "--url", server.base, "--room", room, "--mode", "provider",
        "--provider-dir", str(tmp_path),
    )  # fmt: skip
    worker.ready()

    headers = {"Authorization": "Bearer user:alice", "Prefer": "wait=10"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=20) as http:
        raw = http.get(f"/rooms/{room}/providers/{room}:files:bytes", params={"path": "a.bin"})
        assert raw.status_code == 200, raw.text
        assert raw.content == payload
        assert raw.headers["content-type"].startswith("application/octet-stream")

        names = http.get(f"/rooms/{room}/providers/{room}:files:names", params={"suffix": ".txt"})
        assert names.status_code == 200, names.text
        assert names.json() == ["b.txt"]
