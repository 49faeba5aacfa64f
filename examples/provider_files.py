"""A provider worker serving a directory: listings as JSON, file contents as raw bytes.

    python examples/provider_files.py [DIRECTORY]

Then read through the server, e.g.::

    curl -H "Authorization: Bearer user-token" \\
      "http://127.0.0.1:8000/v1/joblib/rooms/demo/providers/demo:files:listing?path=."
    curl -H "Authorization: Bearer user-token" \\
      "http://127.0.0.1:8000/v1/joblib/rooms/demo/providers/demo:files:content?path=README.md"
"""

import logging
import sys
from pathlib import Path
from typing import Any, ClassVar

from _settings import ROOM, TOKEN, URL

from joblib_app.client import JobManager, Provider


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing paths that climb out of ``root``."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise PermissionError(f"{relative} is outside the served directory")
    return target


class DirectoryListing(Provider):
    """Names, kinds and sizes of the entries of a directory."""

    category: ClassVar[str] = "files"
    content_type: ClassVar[str] = "application/json"
    path: str = "."

    def read(self, handler: Path) -> list[dict[str, Any]]:
        folder = resolve_inside(handler, self.path)
        return [
            {"name": p.name, "dir": p.is_dir(), "size": p.stat().st_size if p.is_file() else None}
            for p in sorted(folder.iterdir())
        ]


class FileContent(Provider):
    """The raw bytes of one file."""

    category: ClassVar[str] = "files"
    content_type: ClassVar[str] = "application/octet-stream"
    path: str

    def read(self, handler: Path) -> bytes:
        return resolve_inside(handler, self.path).read_bytes()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    with JobManager(URL, token=TOKEN) as manager:
        manager.register_provider(DirectoryListing, name="listing", handler=root, room=ROOM)
        manager.register_provider(FileContent, name="content", handler=root, room=ROOM)
        logging.info("serving %s as %s", root, list(manager.handlers))
        manager.wait()


if __name__ == "__main__":
    main()
