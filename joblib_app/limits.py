"""Bounds on what the API accepts, as pydantic field types: JSON nesting, paging, and
the text rules of :mod:`joblib_app.domain.names`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from joblib_app.domain.errors import ValidationFailed
from joblib_app.domain.names import (
    CONTENT_TYPE_PATTERN,
    MAX_TEXT_CHARS,
    NAME_PATTERN,
    TEXT_PATTERN,
    clean_error_text,
)

# Far beyond any real page, and inside the 64-bit integers both databases take.
MAX_OFFSET = 2**31 - 1


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
        raise ValidationFailed(
            [{"loc": ["body", field], "msg": f"{field} {problem}", "type": "value_error"}]
        )


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
