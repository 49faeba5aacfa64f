"""Names every level of the suite shares: the test host's tokens, fresh ids, problem checks."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

# Tokens of the test host (tests/support/host.py): ``admin`` is a superuser, ``user:<name>``
# is the principal <name>.
ADMIN = "admin"
ALICE = "user:alice"
BOB = "user:bob"
PROBLEM = "application/problem+json"


def new_room(prefix: str = "r") -> str:
    """A room id of the calling test's own, so tests sharing a server never meet."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def unique(prefix: str = "j") -> str:
    """A fresh name (of a job, a provider, ...)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def auth(token: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``extra`` headers plus a bearer ``token``; ``None`` sends no Authorization at all."""
    headers = dict(extra or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def request_hash(params: Mapping[str, str]) -> tuple[str, str]:
    """The contract's canonical JSON of provider read parameters and its SHA-256 hex digest."""
    canonical = json.dumps(dict(params), sort_keys=True, separators=(",", ":"))
    return canonical, hashlib.sha256(canonical.encode()).hexdigest()


def assert_problem(response: httpx.Response, status: int, kind: str | None = None) -> Any:
    """Check an RFC 9457 answer and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    assert body["type"].startswith("/v1/problems/")
    if kind is not None:
        assert body["type"] == f"/v1/problems/{kind}", body
    return body
