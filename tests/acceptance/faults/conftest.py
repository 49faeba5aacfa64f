"""One server per database for the fault tests, with short leases and a fast sweeper."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import DATABASES, database
from tests.support.server import ServerProcess

CLAIM_LEASE = 1.0
SWEEP_INTERVAL = 0.2


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"faults-{request.param}")
    with database(request.param, workdir) as url:
        env = {
            "JOBLIB_TEST_DATABASE_URL": url,
            "ZNDRAW_JOBLIB_CLAIM_LEASE_SECONDS": f"{CLAIM_LEASE:g}",
            "ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS": f"{SWEEP_INTERVAL:g}",
            **getattr(request.module, "SERVER_ENV", {}),
        }
        with ServerProcess(env, log_path=workdir / "server.log") as instance:
            yield instance
