"""Every problem kind: its class carries the fields its problem+json answer shows."""

from __future__ import annotations

import json

import pytest

from joblib_app.domain import errors as e
from joblib_app.problems import PROBLEM_TYPE_PREFIX, problem_error_response


@pytest.mark.parametrize(
    ("error", "status", "kind", "detail"),
    [
        (e.TaskNotFound("t1"), 404, "task-not-found", "Task 't1' not found"),
        (e.WorkerNotFound("w1"), 404, "worker-not-found", "Worker 'w1' not found"),
        (e.WorkerNotFound("w", shown="'w…'"), 404, "worker-not-found", "Worker 'w…' not found"),
        (e.JobNotFound("r:c:n"), 404, "job-not-found", "Job 'r:c:n' not found"),
        (
            e.InvalidJobName("bad"),
            404,
            "job-not-found",
            "Invalid job name format: 'bad' (expected room_id:category:name)",
        ),
        (e.ProviderNotFound("r:c:p"), 404, "provider-not-found", "Provider 'r:c:p' not found"),
        (e.Forbidden("no"), 403, "forbidden", "no"),
        (e.InvalidRoomId("bad room"), 400, "invalid-room-id", "bad room"),
        (e.InvalidCategory("cat"), 400, "invalid-category", "cat"),
        (
            e.InvalidTransition("pending", "running"),
            409,
            "invalid-task-transition",
            "Cannot move a task from pending to running",
        ),
        (
            e.SchemaConflict("r:c:n"),
            409,
            "schema-conflict",
            "Job 'r:c:n' is registered with a different schema",
        ),
        (e.ProviderRequestNotPending("x"), 409, "provider-request-not-pending", "x"),
        (e.BodyTooLarge(10), 413, "content-too-large", "The request body is larger than 10 bytes"),
        (e.InvalidInput("hdr"), 422, "validation-error", "hdr"),
        (e.ProviderFailed("boom"), 502, "provider-error", "boom"),
        (e.ProviderTimeout("late"), 504, "provider-timeout", "late"),
        (
            e.DatabaseUnavailable(),
            503,
            "database-unavailable",
            "The database connection was lost; retry the request",
        ),
        (e.ProviderBackendUnavailable("down"), 503, "result-backend-unavailable", "down"),
        (
            e.InternalJobNotConfigured("@internal:c:n"),
            503,
            "internal-job-not-configured",
            "No executor is registered for internal job '@internal:c:n'",
        ),
        (e.Unauthorized(), 401, "unauthorized", "Authentication required"),
    ],
)
def test_kind_fields(error: e.ProblemError, status: int, kind: str, detail: str) -> None:
    assert isinstance(error, e.ProblemError)
    assert (error.status, error.kind, error.detail) == (status, kind, detail)
    assert str(error) == detail
    response = problem_error_response(error, "/x")
    assert response.status_code == status
    assert response.media_type == "application/problem+json"
    body = json.loads(bytes(response.body))
    assert body["type"] == PROBLEM_TYPE_PREFIX + kind
    assert body["status"] == status
    assert body["detail"] == detail
    assert body["title"] == error.title
    assert body["instance"] == "/x"


def test_titles_and_headers() -> None:
    assert e.Unauthorized().headers == {"WWW-Authenticate": "Bearer"}
    assert e.DatabaseUnavailable().headers == {"Retry-After": "1"}
    assert e.BodyTooLarge(1).title == "Content too large"
    assert e.JobNotFound("x").title == "Job not found"


def test_validation_failed_summarises_its_errors() -> None:
    errors = [
        {"loc": ["body", "payload"], "msg": "too deep", "type": "value_error"},
        {"loc": ["path", "task_id"], "msg": "not a uuid", "type": "uuid_parsing"},
    ]
    error = e.ValidationFailed(errors)
    assert error.detail == "body.payload: too deep; path.task_id: not a uuid"
    assert error.errors == errors
    body = json.loads(bytes(problem_error_response(error, None).body))
    assert body["errors"] == errors
    assert "instance" not in body
    assert e.ValidationFailed([]).detail == "Request validation failed"


def test_catching_a_family() -> None:
    # An invalid job name is still a job that is not found, and every 503 is an Unavailable.
    assert isinstance(e.InvalidJobName("x"), e.JobNotFound)
    assert isinstance(e.DatabaseUnavailable(), e.Unavailable)
    assert isinstance(e.BodyTooLarge(1), e.ContentTooLarge)
