"""The ways an ``@internal`` task's ``run()`` can return, and the task each one ends as.

Shared by the in-process and the taskiq-worker tests: the two executors must agree.
"""

from __future__ import annotations

from typing import Any

import pytest

# Small, so that a too-large result needs no big payload.
RESULT_LIMIT = 200
SMALL_RESULTS = {"ZNDRAW_JOBLIB_MAX_TASK_RESULT_BYTES": str(RESULT_LIMIT)}

ANSWER_FIELDS = ("payload", "status", "result", "error")
# ``Answer``'s payload, then the final status, result, and the start of the error text.
ANSWER_CASES: list[Any] = [
    pytest.param({"size": 10}, "completed", {"text": "x" * 10, "size": 10}, None, id="json"),
    pytest.param(
        {"size": RESULT_LIMIT},
        "failed",
        None,
        "result too large: The task result is",
        id="too-large",
    ),
    pytest.param(
        {"opaque": True}, "failed", None, "result is not JSON-serialisable", id="not-json"
    ),
]


def assert_ended_as(
    final: dict[str, Any], status: str, result: object, error: str | None, context: str = ""
) -> None:
    """``final`` (a task's JSON) has ``status`` and ``result``, and an error starting so;
    ``context`` (a worker's output, say) is shown with a failure."""
    assert (final["status"], final["result"]) == (status, result), (final, context)
    if error is None:
        assert final["error"] is None, (final, context)
    else:
        assert final["error"].startswith(error), (final, context)
