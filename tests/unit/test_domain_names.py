"""Room ids, full names and ids, without I/O."""

from __future__ import annotations

import pytest

from joblib_app.domain.errors import InvalidRoomId
from joblib_app.domain.names import (
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    MAX_ERROR_CHARS,
    MAX_FULL_NAME_CHARS,
    FullName,
    clean_error_text,
    is_internal_name,
    is_plain_id,
    make_full_name,
    parse_full_name,
    provider_rooms,
    validate_room_id,
    visible_rooms,
)


@pytest.mark.parametrize("room", ["room-1", "a", "x" * 255, GLOBAL_ROOM, INTERNAL_ROOM, "é 漢"])
def test_valid_room_ids(room: str) -> None:
    assert validate_room_id(room) == room


@pytest.mark.parametrize(
    "room", ["", "x" * 256, "a@b", "a:b", "a/b", "a\x00b", "a\nb", "a\x7fb", "a\ud800"]
)
def test_invalid_room_ids(room: str) -> None:
    with pytest.raises(InvalidRoomId) as caught:
        validate_room_id(room)
    assert caught.value.status == 400
    assert caught.value.kind == "invalid-room-id"
    # The reference's clients look for these words.
    assert "invalid characters" in caught.value.detail


def test_long_room_id_is_shown_cut() -> None:
    with pytest.raises(InvalidRoomId) as caught:
        validate_room_id("y" * 1000)
    assert "y" * 255 + "..." in caught.value.detail
    assert "y" * 256 not in caught.value.detail


def test_visible_rooms() -> None:
    assert visible_rooms("r") == ("r", GLOBAL_ROOM, INTERNAL_ROOM)
    assert visible_rooms(GLOBAL_ROOM) == (GLOBAL_ROOM, INTERNAL_ROOM)
    assert provider_rooms("r") == ("r", GLOBAL_ROOM)
    assert provider_rooms(GLOBAL_ROOM) == (GLOBAL_ROOM,)


def test_full_names() -> None:
    name = make_full_name("r", "cat", "Job")
    assert name == "r:cat:Job"
    assert parse_full_name(name) == FullName("r", "cat", "Job")
    assert str(FullName("r", "cat", "Job")) == name
    # The name part may hold colons: only the first two split.
    assert parse_full_name("r:c:a:b") == FullName("r", "c", "a:b")
    assert is_internal_name("@internal:c:n")
    assert not is_internal_name("@global:c:n")


@pytest.mark.parametrize(
    "bad", ["", "r:c", "r::n", ":c:n", "r:c:", "r:c:n\x00", "r:c:" + "n" * MAX_FULL_NAME_CHARS]
)
def test_malformed_full_names_name_nothing(bad: str) -> None:
    assert parse_full_name(bad) is None


def test_plain_ids() -> None:
    assert is_plain_id("0" * 36)
    assert not is_plain_id("0" * 37)
    assert not is_plain_id("")
    assert not is_plain_id("a\x00")


def test_error_text_is_cleaned_and_cut() -> None:
    assert clean_error_text(None) is None
    assert clean_error_text("a\x00b\ud800") == "a\ufffdb\ufffd"
    assert clean_error_text("tab\tkept") == "tab\tkept"
    assert len(clean_error_text("e" * (MAX_ERROR_CHARS + 5)) or "") == MAX_ERROR_CHARS
