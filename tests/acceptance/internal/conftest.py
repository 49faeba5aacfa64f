"""Fixtures of the ``@internal`` tests (each module defines its own ``server``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.server import ServerProcess


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the ``server`` fixture of the requesting module."""
    async with httpx.AsyncClient(base_url=server.base, timeout=20) as client:
        yield client
