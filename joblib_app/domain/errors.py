"""One exception class per problem kind.

Every class is a :class:`ProblemError`: it carries what an RFC 9457 problem needs (status,
kind, title, detail, headers). The API maps them to ``application/problem+json`` in one
place (:mod:`joblib_app.problems`); the Socket.IO namespace answers their ``detail``.
Callers catch a type, never compare status codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

PROBLEM_TYPE_PREFIX = "/v1/problems/"
"""What precedes the problem kind in a problem+json ``type``."""


class ProblemError(Exception):
    """An error answered as a problem.

    ``kind`` is the kebab-case problem name (``job-not-found``); the answer's ``type`` is
    ``/v1/problems/<kind>``. Subclasses fix ``status`` and ``kind``; this class itself
    stays usable for the host's own problems (a room write guard may raise it).
    """

    status_code: ClassVar[int] = 500
    problem_kind: ClassVar[str] = "error"

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.title = title or kind.replace("-", " ").capitalize()
        self.headers = dict(headers or {})
        # Field errors of a 422, answered as the body's ``errors`` member.
        self.errors = errors


class _Kind(ProblemError):
    """A problem whose status and kind are the class's own."""

    def __init__(
        self,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(
            self.status_code,
            self.problem_kind,
            detail,
            title=title,
            headers=headers,
            errors=errors,
        )


# -- 401 / 403 ------------------------------------------------------------------------------


class Unauthorized(_Kind):
    """No principal: the request carried no valid credential."""

    status_code = 401
    problem_kind = "unauthorized"

    def __init__(self) -> None:
        super().__init__(
            "Authentication required",
            title="Unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )


class Forbidden(_Kind):
    """The principal is known but not allowed to do this."""

    status_code = 403
    problem_kind = "forbidden"


# -- 404 ------------------------------------------------------------------------------------


class TaskNotFound(_Kind):
    """No such task (or one the caller may not see)."""

    status_code = 404
    problem_kind = "task-not-found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task '{task_id}' not found")


class WorkerNotFound(_Kind):
    """No such worker (or another user's, which registration never reveals)."""

    status_code = 404
    problem_kind = "worker-not-found"

    def __init__(self, worker_id: str, *, shown: str | None = None) -> None:
        # ``shown``: how the id is quoted, when it is too long or odd to repeat whole.
        super().__init__(f"Worker {shown or repr_quoted(worker_id)} not found")


class JobNotFound(_Kind):
    """No active job of that name visible from the room."""

    status_code = 404
    problem_kind = "job-not-found"

    def __init__(self, full_name: str) -> None:
        super().__init__(f"Job '{full_name}' not found")


class InvalidJobName(JobNotFound):
    """A malformed full name names no job (worded as the reference's detail, which its
    clients look for: ``Invalid job name format``)."""

    def __init__(self, full_name: str) -> None:
        _Kind.__init__(
            self,
            f"Invalid job name format: '{full_name}' (expected room_id:category:name)",
        )


class ProviderNotFound(_Kind):
    """No such provider visible from the room."""

    status_code = 404
    problem_kind = "provider-not-found"

    def __init__(self, name: str) -> None:
        super().__init__(f"Provider '{name}' not found")


# -- 400 / 409 / 413 / 422 ------------------------------------------------------------------


class InvalidRoomId(_Kind):
    """A room id that is empty, too long, or holds a forbidden character."""

    status_code = 400
    problem_kind = "invalid-room-id"


class InvalidCategory(_Kind):
    """A category the host does not allow."""

    status_code = 400
    problem_kind = "invalid-category"


class InvalidTransition(_Kind):
    """The transition table does not allow this move."""

    status_code = 409
    problem_kind = "invalid-task-transition"

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"Cannot move a task from {current} to {target}")
        self.current = current
        self.target = target


class SchemaConflict(_Kind):
    """A job registered again with a different schema."""

    status_code = 409
    problem_kind = "schema-conflict"

    def __init__(self, full_name: str) -> None:
        super().__init__(f"Job '{full_name}' is registered with a different schema")


class ProviderRequestNotPending(_Kind):
    """An upload that answers no read in flight."""

    status_code = 409
    problem_kind = "provider-request-not-pending"


class ContentTooLarge(_Kind):
    """A body, a result or an upload beyond its bound."""

    status_code = 413
    problem_kind = "content-too-large"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, title="Content too large")


class BodyTooLarge(ContentTooLarge):
    """A request body larger than its route's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit} bytes")
        self.limit = limit


class ValidationFailed(_Kind):
    """``422``: each error as ``{"loc", "msg", "type"}``, summarised in ``detail``."""

    status_code = 422
    problem_kind = "validation-error"

    def __init__(self, errors: Sequence[dict[str, Any]]) -> None:
        listed = list(errors)
        summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in listed)
        super().__init__(
            summary or "Request validation failed", title="Validation error", errors=listed
        )


class InvalidInput(_Kind):
    """``422`` without field errors: a header or a raw body that is not what it must be."""

    status_code = 422
    problem_kind = "validation-error"


# -- 5xx ------------------------------------------------------------------------------------


class ProviderFailed(_Kind):
    """The provider answered a read with a problem of its own."""

    status_code = 502
    problem_kind = "provider-error"


class ProviderTimeout(_Kind):
    """The provider did not answer in time."""

    status_code = 504
    problem_kind = "provider-timeout"


class Unavailable(_Kind):
    """A dependency is down; the request may be retried (``Retry-After``)."""

    status_code = 503


class DatabaseUnavailable(Unavailable):
    """The database connection was lost."""

    problem_kind = "database-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The database connection was lost; retry the request", headers={"Retry-After": "1"}
        )


class ProviderBackendUnavailable(Unavailable):
    """The provider result backend (memory or Redis) cannot be reached."""

    problem_kind = "result-backend-unavailable"


class InternalJobNotConfigured(Unavailable):
    """No executor in this process for an ``@internal`` job."""

    problem_kind = "internal-job-not-configured"

    def __init__(self, full_name: str) -> None:
        super().__init__(f"No executor is registered for internal job '{full_name}'")


def repr_quoted(value: str) -> str:
    """``'value'``: how details quote names and ids."""
    return f"'{value}'"
