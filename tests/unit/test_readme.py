"""The README stays true to the package: its install lines and its Socket.IO reference.

Each section that uses an optional dependency names the extra that installs it (a reader
who copies one section gets no ``ModuleNotFoundError``), and the Socket.IO section lists
every event the server sends, with every payload field, and every event it handles.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from joblib_app import JoblibConfig, create_joblib_app
from joblib_app.realtime import events

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
# What a section may use that only an extra installs, and that extra.
NEEDS_EXTRA = {
    "taskiq_redis": "redis",
    "postgresql+asyncpg": "postgres",
    "uvicorn": "server",
    "python examples/host_app.py": "server",
}
# Sections that document the installs themselves, or only point at other sections.
NOT_SECTIONS = {"What to install"}


def sections() -> dict[str, str]:
    """``## `` and ``### `` sections by title, each with its own text only."""
    parts = re.split(r"^#{2,3} (.+)$", README, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def installed_extras(text: str) -> set[str]:
    found: set[str] = set()
    for extras in re.findall(r'pip install -e "\.\[([^\]]+)\]"', text):
        found.update(e.strip() for e in extras.split(","))
    return found


def test_every_named_extra_exists() -> None:
    named = installed_extras(README)
    assert named, "the README names no extra"
    assert named <= EXTRAS, named - EXTRAS


def test_each_section_names_the_extra_it_needs() -> None:
    checked = 0
    for title, body in sections().items():
        if title in NOT_SECTIONS:
            continue
        needed = {extra for marker, extra in NEEDS_EXTRA.items() if marker in body}
        if not needed:
            continue
        checked += 1
        assert needed <= installed_extras(body), (title, needed)
    assert checked >= 3


def socketio_section() -> str:
    return sections()["Socket.IO"]


def test_every_server_event_is_documented_with_its_room_and_payload() -> None:
    section = socketio_section()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `(\w+)` \|.*$", section, flags=re.MULTILINE)
    }
    event_classes = [
        cls
        for cls in vars(events).values()
        if isinstance(cls, type) and issubclass(cls, events._Event) and cls is not events._Event
    ]
    assert len(event_classes) >= 6
    for cls in event_classes:
        name = cls.event_name()
        assert name in rows, f"{name} is not in the README's Socket.IO tables"
        for field in cls.model_fields:
            assert field in rows[name], f"{name}.{field} is not in its README row"


def test_every_client_event_is_documented() -> None:
    async def nobody(conn: object) -> None:
        return None

    app = create_joblib_app(
        JoblibConfig(authenticate=nobody, database_url="sqlite+aiosqlite:///:memory:")
    )
    handled = app.sio.namespace_handlers["/"].client_events()
    assert "join_room" in handled
    section = socketio_section()
    for name in handled:
        assert f"| `{name}` |" in section, f"{name} is not in the README's Socket.IO tables"
    assert "/socket.io" in section
    assert 'auth={"token"' in section
