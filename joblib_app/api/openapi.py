"""The OpenAPI document at the mount: bearer security, problem+json errors, plain summaries.

FastAPI documents only what it sees: its own routes, a ``422`` in its own
``application/json`` shape (which this app never sends), no authentication. This module
describes what the app really answers. Routes declare the errors they can give with
:func:`problems`; :func:`complete_openapi` adds to FastAPI's document what every route
shares (``401``, ``413`` on a body, ``422`` where FastAPI validates) and the ``Problem``
schema. The app calls it from its ``openapi()`` (FastAPI's documented way to extend it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from joblib_app.problems import PROBLEM_CONTENT_TYPE
from joblib_app.settings import JobLibSettings

PROBLEM_REF = "#/components/schemas/Problem"
SECURITY_SCHEME = "bearerAuth"

# Why each status can be answered, in the words a client reads in the document.
_WHY: dict[int, str] = {
    400: "Invalid room id or category",
    401: "No or unknown credentials",
    403: "Not allowed for this caller",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: "Request validation failed",
    502: "The provider reported that it cannot answer this read",
    503: "A backing service is unavailable; retry later",
    504: "The provider did not answer in time; retry later",
}


class ValidationIssue(BaseModel):
    """One field error of a ``422``."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error this API answers has this shape."""

    type: str = Field(description="`/v1/problems/<kind>`, e.g. `/v1/problems/job-not-found`")
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request path")
    errors: list[ValidationIssue] | None = Field(
        default=None, description="The field errors of a 422"
    )


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """One ``responses`` entry: ``status`` answered as problem+json."""
    entry: dict[str, Any] = {
        "description": description or _WHY[status],
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if status == 401:
        entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status in (502, 503, 504):
        entry["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return entry


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route decorator: the problem statuses the route can answer."""
    return {status: problem_response(status) for status in statuses}


def prefer_wait_parameter(what: str) -> dict[str, Any]:
    """The optional ``Prefer: wait=N`` request header, documented for one operation."""
    return {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "example": "wait=30",
        "description": f"`wait=N`: {what}",
    }


def _is_fastapi_validation(entry: dict[str, Any]) -> bool:
    schema = entry.get("content", {}).get("application/json", {}).get("schema", {})
    ref: str = schema.get("$ref", "")
    return ref.endswith("/HTTPValidationError")


def _complete_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, entry in list(responses.items()):
        if _is_fastapi_validation(entry):
            responses[status] = problem_response(int(status))
    responses.setdefault("401", problem_response(401))
    if "requestBody" in operation:
        responses.setdefault("413", problem_response(413))
        responses.setdefault("422", problem_response(422))
    # Markdown, not reStructuredText: Swagger UI and ReDoc render single backticks.
    for key in ("summary", "description"):
        if isinstance(operation.get(key), str):
            operation[key] = operation[key].replace("``", "`")
    # Keep numeric order, so the document reads 200, 201, 400, 401, ...
    operation["responses"] = dict(sorted(responses.items()))


def _document_categories(defined: dict[str, Any], settings: JobLibSettings) -> None:
    """The allowed categories, where the settings restrict them, as the schema's enum."""
    for model, allowed in (
        ("JobRegister", settings.allowed_categories),
        ("ProviderRegister", settings.allowed_provider_categories),
    ):
        category = defined.get(model, {}).get("properties", {}).get("category")
        if category is not None and allowed is not None:
            category["enum"] = sorted(allowed)


def _complete(schema: dict[str, Any], settings: JobLibSettings) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    defined = components.setdefault("schemas", {})
    _document_categories(defined, settings)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defined.update(problem.pop("$defs", {}))
    defined["Problem"] = problem
    for name in ("HTTPValidationError", "ValidationError"):
        defined.pop(name, None)
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "The token the host's `authenticate` accepts",
        }
    }
    schema["security"] = [{SECURITY_SCHEME: []}]
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            _complete_operation(operation)
    return schema


def complete_openapi(schema: dict[str, Any], settings: JobLibSettings) -> dict[str, Any]:
    """Make FastAPI's document of the app true to what the app answers, in place: the
    ``Problem`` schema, the bearer scheme, and ``401``/``413``/``422`` as problem+json."""
    return _complete(schema, settings)
