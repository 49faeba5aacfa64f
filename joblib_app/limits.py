"""Bounds on what the API accepts: string lengths and characters, JSON nesting, paging.

Checked in Python before anything reaches the database, so SQLite and PostgreSQL answer
the same (PostgreSQL refuses NUL in text and enforces ``VARCHAR(255)``; SQLite does neither).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from joblib_app.problems import validation_problem

# Room ids, categories, names, content types: the width of their columns.
MAX_TEXT_CHARS = 255
# ``{room}:{category}:{name}``.
MAX_FULL_NAME_CHARS = 3 * MAX_TEXT_CHARS + 2
# Server-made ids (workers, tasks, providers) are UUIDs; anything longer cannot exist.
MAX_ID_CHARS = 36
# Far beyond any real page, and inside the 64-bit integers both databases take.
MAX_OFFSET = 2**31 - 1
# A worker's error text is truncated to this many characters.
MAX_ERROR_CHARS = 65_536

# C0 controls, DEL, and lone surrogates (which cannot be encoded as UTF-8).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
# Printable text without ``:`` (the full-name separator) or ``/`` (a path separator).
NAME_PATTERN = r"^[^:/\x00-\x1f\x7f]+$"
# Printable text (worker ids in bodies).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
# A media type is a header value: printable ASCII, no CR/LF.
CONTENT_TYPE_PATTERN = r"^[!-~][ -~]*$"
_REPLACEMENT = "\ufffd"


def has_bad_chars(value: str) -> bool:
    """Whether ``value`` holds a control character or a lone surrogate."""
    return _BAD_CHARS.search(value) is not None


def is_plain_id(value: str) -> bool:
    """Whether ``value`` could be a server-made id; if not, it names nothing (404)."""
    return 0 < len(value) <= MAX_ID_CHARS and not has_bad_chars(value)


def clean_error_text(value: str | None) -> str | None:
    """A worker's error text as stored: NUL and lone surrogates become U+FFFD, and text
    longer than :data:`MAX_ERROR_CHARS` is cut there. Other characters are kept."""
    if value is None:
        return None
    cleaned = re.sub("[\x00\ud800-\udfff]", _REPLACEMENT, value)
    return cleaned[:MAX_ERROR_CHARS]


Name = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NAME_PATTERN)]
BodyId = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=TEXT_PATTERN)]
ContentType = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=CONTENT_TYPE_PATTERN)
]
ErrorText = Annotated[str | None, AfterValidator(clean_error_text)]


def json_problem(value: Any, max_depth: int) -> str | None:
    """Why ``value`` (parsed JSON) is refused, or ``None``.

    Refused: nesting deeper than ``max_depth`` containers, and strings (keys included)
    with lone surrogates, which no database or JSON encoder can write. Iterative, so a
    deep value cannot exhaust the stack.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
            for key, child in item.items():
                if isinstance(key, str) and _has_surrogate(key):
                    return "a key holds a lone surrogate"
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and _has_surrogate(item):
            return "a string holds a lone surrogate"
    return None


def check_json_body(value: Any, max_depth: int, field: str) -> None:
    """``422`` (located at ``body.<field>``) when :func:`json_problem` refuses ``value``."""
    problem = json_problem(value, max_depth)
    if problem is not None:
        raise validation_problem(
            [{"loc": ["body", field], "msg": f"{field} {problem}", "type": "value_error"}]
        )


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
