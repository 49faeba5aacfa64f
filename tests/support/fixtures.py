"""Fixtures every level shares (a pytest plugin, loaded by the root ``conftest.py``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.support.databases import fresh_postgres
from tests.support.names import ALICE
from tests.support.realtime import EventLog, Reachable, connect
from tests.support.server import STARTED
from tests.support.services import delete_redis_prefix, require_redis

OpenRoomEvents = Callable[..., Awaitable[EventLog]]


_SERVERS_BEFORE_TEST = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_SERVERS_BEFORE_TEST] = len(STARTED)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report ends with the log tails of the uvicorn servers it used.

    Those are the servers still running when it failed and those it started itself; a
    server's side of a failure (a traceback, a warning) is otherwise gone with its tmp dir.
    """
    report: pytest.TestReport = yield
    if report.failed:
        since = item.stash.get(_SERVERS_BEFORE_TEST, len(STARTED))
        for index, server in enumerate(STARTED):
            tail = server.log_tail() if server.running or index >= since else ""
            if tail:
                report.sections.append((f"server log, port {server.port} (tail)", tail))
    return report


def new_prefix() -> str:
    """A Redis key prefix of a test's (or module's) own."""
    return f"joblibtest:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_url() -> str:
    return require_redis()


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def module_redis_prefix() -> Iterator[tuple[str, str]]:
    """``(redis_url, prefix)`` shared by a module's server; its keys are deleted afterwards."""
    url = require_redis()
    prefix = new_prefix()
    yield url, prefix
    delete_redis_prefix(url, prefix)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    async with fresh_postgres() as url:
        yield url


@pytest.fixture
async def room_events() -> AsyncIterator[OpenRoomEvents]:
    """Open :class:`EventLog` followers of a room; all are disconnected afterwards."""
    opened: list[EventLog] = []

    async def open_follower(server: Reachable, room_id: str, token: str = ALICE) -> EventLog:
        log = await connect(server, token)
        opened.append(log)
        await log.join_room(room_id)
        return log

    yield open_follower
    for log in opened:
        await log.disconnect()
