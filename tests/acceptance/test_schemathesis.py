"""Schemathesis over the OpenAPI document at the mount, as an admin and as an ordinary user.

It generates requests from the document (valid and invalid ones), sends them to the app
under uvicorn over real HTTP and fails on any answer the document does not describe: an
undocumented status code, content type, header or body shape, or a 5xx other than the
documented 504 of a provider read.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import DATABASES
from tests.support.names import ADMIN, ALICE
from tests.support.server import ServerProcess, serve

CONFIG = Path(__file__).with_name("schemathesis.toml")
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)
# Bounds of one run (there are four: two databases, two callers): generated cases per
# operation in the fuzzing phase, with a fixed seed, so that every run sends the same
# requests (about 25 s a run on an idle machine). No time budget: one would cut a slow
# run short and let it pass having sent less.
MAX_EXAMPLES = 5
SEED = 1
RUN_TIMEOUT_SECONDS = 240


@pytest.fixture(scope="module", params=DATABASES)
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    # Short waits: generated reads of pending tasks and unanswered provider reads would
    # otherwise hold each request for the default long-poll.
    with serve(
        request.param,
        tmp_path_factory.mktemp(f"schemathesis-{request.param}"),
        ZNDRAW_JOBLIB_LONG_POLL_MAX_WAIT_SECONDS="0.2",
        ZNDRAW_JOBLIB_PROVIDER_LONG_POLL_MAX_SECONDS="0.2",
        ZNDRAW_JOBLIB_PROVIDER_LONG_POLL_DEFAULT_SECONDS="0.2",
    ) as server:
        yield server


@pytest.mark.parametrize("token", [ADMIN, ALICE], ids=["admin", "user"])
def test_schemathesis_finds_no_undocumented_answer(
    fuzzed: ServerProcess, token: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            fuzzed.base + "/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            CHECKS,
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            # One worker: hypothesis parses lambda sources with ast.parse, which is not
            # thread-safe on Python 3.11 ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    output = result.stdout + result.stderr
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-3000:]
    # Every operation of the document was tested, none filtered out or skipped.
    assert selected.group(1) == selected.group(2) == tested.group(1), output[-3000:]
    assert result.returncode == 0, output[-12000:]
