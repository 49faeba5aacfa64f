"""Exceptions raised by the worker SDK."""

from __future__ import annotations

from typing import Any


class JoblibClientError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ServerUnreachable(JoblibClientError):
    """The server could not be reached within the allowed time."""


class ApiError(JoblibClientError):
    """The server answered with an error status.

    ``problem`` is the RFC 9457 body when the server sent one (``type``, ``title``,
    ``detail``, ...), else a dict holding the raw text under ``detail``.
    """

    def __init__(self, status_code: int, problem: dict[str, Any]) -> None:
        self.status_code = status_code
        self.problem = problem
        super().__init__(f"{status_code} {self.kind}: {problem.get('detail') or problem}")

    @property
    def kind(self) -> str:
        """The problem's kebab-case name, e.g. ``worker-not-found`` (empty if unknown)."""
        problem_type = str(self.problem.get("type") or "")
        return problem_type.rsplit("/", 1)[-1]

    @property
    def detail(self) -> str:
        """The human-readable explanation."""
        return str(self.problem.get("detail") or self.problem.get("title") or "")
