"""Start-up of the internal jobs: several server processes on one PostgreSQL database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from joblib_app.domain.names import INTERNAL_ROOM
from joblib_app.models import job_table
from tests.support.api import post_task
from tests.support.internal_jobs import GREET, INTERNAL_EXTENSIONS
from tests.support.names import ALICE, auth, new_room
from tests.support.server import ServerProcess
from tests.support.waiting import wait_terminal


async def test_two_servers_starting_together_make_one_row_per_extension(
    postgres_url: str, tmp_path: Path
) -> None:
    env = {"JOBLIB_TEST_DATABASE_URL": postgres_url, "JOBLIB_TEST_INTERNAL": "1"}
    servers = [ServerProcess(env, log_path=tmp_path / f"server{i}.log") for i in range(2)]
    try:
        # Both processes run their lifespan (tables, internal job rows) at the same time.
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))

        engine = create_async_engine(postgres_url)
        try:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(job_table.c.full_name, func.count())
                        .where(job_table.c.room_id == INTERNAL_ROOM)
                        .group_by(job_table.c.full_name)
                    )
                ).all()
        finally:
            await engine.dispose()
        assert sorted(rows) == sorted(
            (f"@internal:{e.category}:{e.__name__}", 1) for e in INTERNAL_EXTENSIONS
        )

        # Each process runs internal tasks in process with its own InMemoryBroker.
        room = new_room()
        for server in servers:
            async with httpx.AsyncClient(base_url=server.base, timeout=20) as http:
                started = await http.get(server.origin + "/joblib-started")
                assert started.json() == {"started": True}
                listed = (await http.get(f"/rooms/{room}/jobs", headers=auth(ALICE))).json()
                internal = [j["full_name"] for j in listed["items"] if j["full_name"][0] == "@"]
                assert sorted(internal) == sorted(name for name, _ in rows)
                task = (await post_task(http, room, GREET, {"name": "pg"})).json()
                assert (await wait_terminal(http, task["id"]))["status"] == "completed"
    finally:
        for server in servers:
            server.stop()
