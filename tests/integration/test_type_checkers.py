"""Type checkers find ``joblib_app`` in the README's editable install.

setuptools' editables are import hooks that mypy cannot follow ("Cannot find implementation
or library stub for module named 'joblib_app'"); hatchling's are a plain path entry. This
runs mypy as a host project would: on a host file in a directory of its own, with the
environment's ``site-packages`` as the only way to reach the package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HOST = """\
from fastapi import FastAPI

from joblib_app import JoblibConfig, Principal, create_joblib_app, static_token_authenticator
from joblib_app.client import JobManager

joblib = create_joblib_app(
    JoblibConfig(authenticate=static_token_authenticator({"s3cret": Principal("alice")}))
)
app = FastAPI(lifespan=joblib.lifespan)
app.mount("/v1/joblib", joblib)
manager_type: type[JobManager] = JobManager
reveal_type(joblib)
"""
# The package's dependencies are skipped: checking them (fastapi, pydantic, SQLAlchemy, ...)
# takes minutes and says nothing about whether joblib_app itself is found.
CONFIG = """\
[mypy]
[mypy-fastapi.*,fastapi_offline.*,starlette.*,pydantic.*,pydantic_settings.*,sqlalchemy.*,\
sqlmodel.*,socketio.*,engineio.*,taskiq.*,taskiq_redis.*,redis.*,httpx.*,anyio.*]
follow_imports = skip
"""


def test_mypy_finds_the_package_from_a_host_project(tmp_path: Path) -> None:
    (tmp_path / "host.py").write_text(HOST)
    (tmp_path / "mypy.ini").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            "--config-file",
            "mypy.ini",
            "--python-executable",
            sys.executable,
            "host.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert "import-not-found" not in output, output
    assert "Cannot find implementation" not in output, output
    # The types come from the package itself (py.typed), not from an Any fallback.
    assert 'Revealed type is "joblib_app.app.JoblibApp"' in output, output
    assert result.returncode == 0, output
