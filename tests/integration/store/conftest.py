from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from joblib_app.store.database import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite file database on the in-loop path, with the package's tables."""
    database = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'joblib.db'}")
    assert database._in_loop is not None
    await database.create_tables()
    try:
        yield database
    finally:
        await database.dispose()
