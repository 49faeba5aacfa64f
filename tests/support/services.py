"""Where the test services live, and the rule for when one is missing.

On CI (``CI=true``) a missing PostgreSQL or Redis fails the test; elsewhere it skips with a
one-line reason.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest
import redis

REDIS_URL = os.environ.get("JOBLIB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get(
    "JOBLIB_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    """Skip (laptop) or fail (CI) when a service is not listening."""
    if port_open(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


def require_redis() -> str:
    require("Redis", "127.0.0.1", 6379)
    return REDIS_URL


def require_postgres() -> str:
    require("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_ADMIN_URL


def delete_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (test clean-up)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def require_chromium() -> str:
    """The Debian ``chromium`` binary (driven by Playwright); skip or fail as for services."""
    path = shutil.which("chromium")
    if path is not None:
        return path
    reason = "chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing browser is a failure)")
    pytest.skip(reason)
