"""The ``Prefer: wait=N`` header, without I/O."""

from __future__ import annotations

import pytest

from joblib_app.domain.prefer import (
    format_seconds,
    parse_prefer_wait,
    prefer_wait,
    preference_applied,
)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait=5", 5.0),
        ("wait=0.5", 0.5),
        ('wait="7"', 7.0),
        ("WAIT = 3", 3.0),
        ("respond-async, wait=10", 10.0),
        ("handling=lenient; wait=2", 2.0),
        ("wait=1e9", 1e9),
        ("wait=0", 0.0),
    ],
)
def test_parsed(header: str, seconds: float) -> None:
    assert parse_prefer_wait(header) == seconds


@pytest.mark.parametrize("header", [None, "", "respond-async", "wait=", "wait=-1", "nowait=5"])
def test_no_wait(header: str | None) -> None:
    assert parse_prefer_wait(header) is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5"), (5.0, "5"), (0.5, "0.5"), (30.25, "30.25")]
)
def test_formatted(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
    assert prefer_wait(seconds) == f"wait={text}"
    assert preference_applied(seconds) == f"wait={text}"


def test_round_trip() -> None:
    for seconds in (0.25, 1, 2.5, 60):
        assert parse_prefer_wait(prefer_wait(seconds)) == seconds
