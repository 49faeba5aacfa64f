"""Exceptions raised by the worker SDK: one class per condition the SDK decides on.

The HTTP layer (:mod:`joblib_app.client.http`) turns an error answer into the subclass of
:class:`ApiError` for its status code and problem ``type``, so callers catch a type and
never read a message.
"""

from __future__ import annotations

from typing import Any

from joblib_app.domain.errors import WorkerNotFound


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


class Forbidden(ApiError):
    """403: the caller may not do this (another user's worker, task or provider)."""


class NotFound(ApiError):
    """404: the server does not know the thing addressed."""


class WorkerGone(ApiError):
    """The server no longer has this worker for the caller.

    Raised for ``404 worker-not-found``, and by the worker's own calls (heartbeat, claim) for
    any 403 or 404: for those, both mean that this worker is not ours to use any more.
    """


class Conflict(ApiError):
    """409: the request does not fit the current state (e.g. an invalid task transition)."""


class PayloadTooLarge(ApiError):
    """413: the body is over the server's limit (e.g. ``max_task_result_bytes``)."""


class ServiceUnavailable(ApiError):
    """503: the server cannot serve now (database or backend lost, or not configured)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    503: ServiceUnavailable,
}


def api_error(status_code: int, problem: dict[str, Any]) -> ApiError:
    """The :class:`ApiError` subclass for an error answer, by problem kind, then status."""
    error = ApiError(status_code, problem)
    if status_code == 404 and error.kind == WorkerNotFound.problem_kind:
        return WorkerGone(status_code, problem)
    return _BY_STATUS.get(status_code, ApiError)(status_code, problem)


def as_worker_gone(error: ApiError) -> ApiError:
    """``error`` as :class:`WorkerGone` when it is a 403 or 404 to one of the worker's calls."""
    if isinstance(error, Forbidden | NotFound) and not isinstance(error, WorkerGone):
        return WorkerGone(error.status_code, error.problem)
    return error
