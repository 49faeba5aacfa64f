"""Room ids and full names: kept for older imports; the rules are
:mod:`joblib_app.domain.names`."""

from __future__ import annotations

from joblib_app.domain.names import (
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    RESERVED_ROOMS,
    FullName,
    make_full_name,
    parse_full_name,
    validate_room_id,
    visible_rooms,
)

__all__ = [
    "GLOBAL_ROOM",
    "INTERNAL_ROOM",
    "RESERVED_ROOMS",
    "FullName",
    "make_full_name",
    "parse_full_name",
    "validate_room_id",
    "visible_rooms",
]
