"""Room ids and full names: the naming rules of jobs and providers."""

from __future__ import annotations

from dataclasses import dataclass

from joblib_app.limits import MAX_FULL_NAME_CHARS, MAX_TEXT_CHARS, has_bad_chars
from joblib_app.problems import ProblemError

GLOBAL_ROOM = "@global"
INTERNAL_ROOM = "@internal"
RESERVED_ROOMS = frozenset({GLOBAL_ROOM, INTERNAL_ROOM})


def validate_room_id(room_id: str) -> str:
    """Return ``room_id`` if valid, else raise ``400 invalid-room-id``."""
    if room_id in RESERVED_ROOMS:
        return room_id
    if (
        not room_id
        or len(room_id) > MAX_TEXT_CHARS
        or "@" in room_id
        or ":" in room_id
        or "/" in room_id
        or has_bad_chars(room_id)
    ):
        shown = room_id if len(room_id) <= MAX_TEXT_CHARS else room_id[:MAX_TEXT_CHARS] + "..."
        raise ProblemError(
            400,
            "invalid-room-id",
            # "invalid characters" is the reference's wording, which its clients look for.
            f"Room id {shown!r} contains invalid characters or is empty: it must be 1 to "
            f"{MAX_TEXT_CHARS} characters, without '@', ':', '/' or control characters "
            "(only @global and @internal are "
            "reserved)",
        )
    return room_id


def visible_rooms(room_id: str) -> tuple[str, ...]:
    """Rooms whose jobs are visible from ``room_id``."""
    return tuple(dict.fromkeys((room_id, GLOBAL_ROOM, INTERNAL_ROOM)))


@dataclass(frozen=True, slots=True)
class FullName:
    """``{room_id}:{category}:{name}``."""

    room_id: str
    category: str
    name: str

    def __str__(self) -> str:
        return f"{self.room_id}:{self.category}:{self.name}"


def make_full_name(room_id: str, category: str, name: str) -> str:
    return f"{room_id}:{category}:{name}"


def parse_full_name(full_name: str) -> FullName | None:
    """Split a full name; ``None`` when it is malformed (then it names nothing)."""
    if len(full_name) > MAX_FULL_NAME_CHARS or has_bad_chars(full_name):
        return None
    parts = full_name.split(":", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return FullName(*parts)
