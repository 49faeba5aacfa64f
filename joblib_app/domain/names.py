"""Room ids, full names, ids and text: what a name may hold and what it names.

Checked in Python before anything reaches the database, so SQLite and PostgreSQL answer
the same (PostgreSQL refuses NUL in text and enforces ``VARCHAR(255)``; SQLite does neither).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from joblib_app.domain.errors import InvalidRoomId

GLOBAL_ROOM = "@global"
INTERNAL_ROOM = "@internal"
RESERVED_ROOMS = frozenset({GLOBAL_ROOM, INTERNAL_ROOM})

# Room ids, categories, names, content types: the width of their columns.
MAX_TEXT_CHARS = 255
# ``{room}:{category}:{name}``.
MAX_FULL_NAME_CHARS = 3 * MAX_TEXT_CHARS + 2
# Server-made ids (workers, tasks, providers) are UUIDs; anything longer cannot exist.
MAX_ID_CHARS = 36
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


def is_valid_room_id(room_id: str) -> bool:
    """Whether ``room_id`` may name a room: a reserved one, or 1 to 255 printable
    characters without ``@``, ``:`` or ``/``."""
    if room_id in RESERVED_ROOMS:
        return True
    return not (
        not room_id
        or len(room_id) > MAX_TEXT_CHARS
        or "@" in room_id
        or ":" in room_id
        or "/" in room_id
        or has_bad_chars(room_id)
    )


def validate_room_id(room_id: str) -> str:
    """Return ``room_id`` if valid, else raise :class:`InvalidRoomId`."""
    if is_valid_room_id(room_id):
        return room_id
    shown = room_id if len(room_id) <= MAX_TEXT_CHARS else room_id[:MAX_TEXT_CHARS] + "..."
    raise InvalidRoomId(
        # "invalid characters" is the reference's wording, which its clients look for.
        f"Room id {shown!r} contains invalid characters or is empty: it must be 1 to "
        f"{MAX_TEXT_CHARS} characters, without '@', ':', '/' or control characters "
        "(only @global and @internal are reserved)"
    )


def visible_rooms(room_id: str) -> tuple[str, ...]:
    """Rooms whose jobs are visible from ``room_id``."""
    return tuple(dict.fromkeys((room_id, GLOBAL_ROOM, INTERNAL_ROOM)))


def provider_rooms(room_id: str) -> tuple[str, ...]:
    """Rooms whose providers are visible from ``room_id``."""
    return tuple(dict.fromkeys((room_id, GLOBAL_ROOM)))


@dataclass(frozen=True, slots=True)
class FullName:
    """``{room_id}:{category}:{name}``."""

    room_id: str
    category: str
    name: str

    def __str__(self) -> str:
        return f"{self.room_id}:{self.category}:{self.name}"


def make_full_name(room_id: str, category: str, name: str) -> str:
    """The full name of a job or provider."""
    return f"{room_id}:{category}:{name}"


def parse_full_name(full_name: str) -> FullName | None:
    """Split a full name; ``None`` when it is malformed (then it names nothing)."""
    if len(full_name) > MAX_FULL_NAME_CHARS or has_bad_chars(full_name):
        return None
    parts = full_name.split(":", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return FullName(*parts)


def is_internal_name(full_name: str) -> bool:
    """Whether ``full_name`` names an ``@internal`` job (run by the server's executors)."""
    return full_name.startswith(INTERNAL_ROOM + ":")
