"""The ``Prefer: wait=N`` header (RFC 7240) of long-polls, parsed and written."""

from __future__ import annotations

import re

# Exponents included: ``wait=1e9`` is a billion seconds (then capped), not one.
_PREFER_WAIT = re.compile(
    r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\"?", re.IGNORECASE
)


def parse_prefer_wait(header: str | None) -> float | None:
    """Seconds asked for by the value of a ``Prefer`` header (``wait=N``), if any."""
    if not header:
        return None
    match = _PREFER_WAIT.search(header)
    return float(match.group(1)) if match else None


def format_seconds(seconds: float) -> str:
    """Seconds as the header writes them: ``5``, ``0.5``, never ``5.0``."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def prefer_wait(seconds: float) -> str:
    """The ``Prefer`` header value asking to wait ``seconds``."""
    return f"wait={format_seconds(seconds)}"


def preference_applied(seconds: float) -> str:
    """The ``Preference-Applied`` header value of a wait of ``seconds``."""
    return f"wait={format_seconds(seconds)}"
