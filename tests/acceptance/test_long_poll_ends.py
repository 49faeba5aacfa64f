"""Open long-polls end promptly: when the sweeper removes their worker, and on shutdown
under a plain ``uvicorn`` (no ``--timeout-graceful-shutdown``), with no traceback; so do
Socket.IO sessions on either transport (a polling client holds a request open)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
import redis.asyncio as aioredis
import socketio

from tests.support.api import Api
from tests.support.databases import DATABASES, database
from tests.support.names import ALICE, assert_problem, new_room, unique
from tests.support.realtime import EventLog, connect, socketio_path
from tests.support.server import ServerProcess, serve, server_env, sqlite_env
from tests.support.waiting import wait_until, waiting

# Below the claim long-poll's 5 s safety re-check, so only the deletion can end it in time.
SWEPT_BOUND = 4.0
SHUTDOWN_BOUND = 2.0


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server whose sweeper removes a worker one second after its last heartbeat."""
    workdir = tmp_path_factory.mktemp(f"swept-{request.param}")
    with serve(
        request.param,
        workdir,
        ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS="1",
        ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS="0.2",
    ) as instance:
        yield instance


async def test_the_sweeper_ends_the_claim_long_poll_of_the_worker_it_removes(
    api: Api, server: ServerProcess
) -> None:
    job = await api.register(new_room(), unique())
    started = time.monotonic()
    response = await api.request(
        "POST", "/tasks/claim", json={"worker_id": job["worker_id"]}, headers={"Prefer": "wait=30"}
    )
    assert time.monotonic() - started < SWEPT_BOUND
    assert_problem(response, 404, "worker-not-found")


async def _redis_key_appears(redis_url: str, pattern: str, within: float = 10.0) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(within):
            while True:
                if [key async for key in client.scan_iter(match=pattern)]:
                    return
                await asyncio.sleep(0.01)
    finally:
        await client.aclose()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of each kind (a synchronous fixture: it runs its own event loop)."""
    with database(request.param, tmp_path) as url:
        yield url


async def test_plain_uvicorn_stops_within_two_seconds_with_open_long_polls_and_sessions(
    database_url: str, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    log = tmp_path / "server.log"
    env = server_env(
        database_url, JOBLIB_TEST_REDIS_URL=redis_url, JOBLIB_TEST_REDIS_PREFIX=redis_prefix
    )
    server = ServerProcess(env, log_path=log, graceful_shutdown=None).start()
    sessions: list[EventLog] = []
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            api = Api(client, server)
            room = new_room()
            job = await api.register(room, unique())
            task = await api.submit(room, job["full_name"])
            provider = await api.request(
                "PUT",
                f"/rooms/{room}/providers",
                json={"category": "f", "name": "F", "schema": {}, "content_type": "a/b"},
            )
            assert provider.status_code == 201, provider.text
            idle = await api.register(room, unique())
            polls = [
                api.request(
                    "POST",
                    "/tasks/claim",
                    json={"worker_id": idle["worker_id"]},
                    headers={"Prefer": "wait=60"},
                ),
                api.request("GET", f"/tasks/{task['id']}", headers={"Prefer": "wait=60"}),
                api.request(
                    "GET",
                    f"/rooms/{room}/providers/{provider.json()['full_name']}",
                    params={"q": "1"},
                    headers={"Prefer": "wait=30"},
                ),
            ]
            running = [asyncio.create_task(poll) for poll in polls]
            for transport in ("polling", "websocket"):
                sessions.append(await connect(server, ALICE, transport=transport))
            for session in sessions:
                await session.join_room(room)
            await waiting(server, f"worker:{idle['worker_id']}")
            await waiting(server, f"task:{task['id']}")
            await _redis_key_appears(redis_url, f"{redis_prefix}provider-inflight:*")
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            claim, read, provider_read = await asyncio.wait_for(asyncio.gather(*running), 10)
            exit_code = await asyncio.to_thread(server.process.wait, 10)
            stopped = time.monotonic() - signalled
            await wait_until(
                lambda: not any(session.client.connected for session in sessions),
                within=5,
                what="both Socket.IO sessions closed by the server",
            )
    finally:
        for session in sessions:
            await session.disconnect()
        server.stop()
    assert stopped < SHUTDOWN_BOUND, stopped
    # uvicorn re-raises the signal it handled once it has shut down.
    assert exit_code in (0, -signal.SIGTERM), exit_code
    assert claim.status_code == 200 and claim.json() == {"task": None}
    assert read.status_code == 200 and read.json()["status"] == "pending"
    assert_problem(provider_read, 504, "provider-timeout")
    text = log.read_text()
    assert "joblib-app stopped" in text, text
    assert "Traceback" not in text and "CancelledError" not in text, text
    # The polling session's next poll is refused without an ERROR: the stop ended it.
    assert "ERROR" not in text, text


async def test_polling_client_reconnects_across_a_plain_uvicorn_restart(tmp_path: Path) -> None:
    """The ended polling session is a lost transport to its client, not a deliberate
    disconnect: it reconnects once the server is back; and it leaves promptly."""
    server = ServerProcess(
        sqlite_env(tmp_path), log_path=tmp_path / "server.log", graceful_shutdown=None
    ).start()
    # An HTTP session of the test's own, as EventLog's for polling: python-engineio's own
    # is closed before an unread error answer completes, and one it recreates on a
    # reconnection that races its read loop's reset can be left unclosed.
    http = aiohttp.ClientSession()
    client = socketio.AsyncClient(
        reconnection_delay=0.2, reconnection_delay_max=0.5, http_session=http
    )
    connects: list[float] = []
    client.on("connect", lambda: connects.append(time.monotonic()))
    try:
        await client.connect(
            server.origin,
            socketio_path=socketio_path(server),
            transports=["polling"],
            auth={"token": ALICE},
            wait_timeout=10,
        )
        signalled = time.monotonic()
        await asyncio.to_thread(server.stop)
        assert time.monotonic() - signalled < SHUTDOWN_BOUND
        server.start()
        await wait_until(
            lambda: len(connects) == 2 and client.connected,
            within=15,
            what="the polling client connected again",
        )
        # engine.io alone would hold the poll of a closed session until its ping timeout.
        leaving = time.monotonic()
        await client.disconnect()
        assert time.monotonic() - leaving < SHUTDOWN_BOUND
    finally:
        await client.disconnect()
        await http.close()
        server.stop()
    text = (tmp_path / "server.log").read_text()
    assert "ERROR" not in text and "Traceback" not in text, text
