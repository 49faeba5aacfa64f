"""The example host starts as its docstring and the README say, and serves its docs there."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.server import ROOT, STARTUP_TIMEOUT, free_port

EXAMPLES = ROOT / "examples"
START = "python examples/host_app.py"


def test_the_examples_start_the_server_as_the_readme_does() -> None:
    assert START in (ROOT / "README.md").read_text()
    for path in sorted(EXAMPLES.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "uvicorn examples" not in doc, path.name
    for name in ("host_app.py", "worker_auto.py", "internal_worker.py"):
        doc = ast.get_docstring(ast.parse((EXAMPLES / name).read_text())) or ""
        assert START in doc, name
    host_doc = ast.get_docstring(ast.parse((EXAMPLES / "host_app.py").read_text())) or ""
    assert "/v1/joblib/docs" in host_doc


def test_the_example_host_serves_its_docs_at_the_mount(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "JOBLIB_PORT": str(port),
        "JOBLIB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'joblib.db'}",
        "PYTHONPATH": str(ROOT),
    }
    log = open(tmp_path / "host.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "examples/host_app.py"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    origin = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert process.poll() is None, (tmp_path / "host.log").read_text()
            try:
                if httpx.get(origin + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "example host did not start"
            time.sleep(0.05)
        docs = httpx.get(origin + "/v1/joblib/docs", timeout=10)
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
