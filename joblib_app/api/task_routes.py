"""Tasks: submit, claim (with long-poll), read (with long-poll), update.

These run once or more per task for every worker, so they are plain routes
(:mod:`joblib_app.api.plain`); the contract is the same as for the FastAPI routes.
"""

from __future__ import annotations

import re
import uuid

from pydantic import TypeAdapter, ValidationError

from joblib_app.api.hangup import ClientGone
from joblib_app.api.openapi import prefer_wait_parameter
from joblib_app.api.plain import PlainOperation, PlainRequest, PlainResponse, route
from joblib_app.api.schemas import ClaimRequest, ClaimResponse, TaskOut, TaskSubmit, TaskUpdate
from joblib_app.api.views import claim_json, task_json
from joblib_app.domain.errors import ValidationFailed
from joblib_app.domain.prefer import parse_prefer_wait, preference_applied
from joblib_app.services import claim as claim_service
from joblib_app.services import task_status
from joblib_app.services.submit import submit_task as submit
from joblib_app.settings import JobLibSettings


def _wait_seconds(request: PlainRequest) -> float | None:
    header = request.header(b"prefer")
    return parse_prefer_wait(header.decode("latin-1")) if header else None


async def submit_task(request: PlainRequest) -> PlainResponse:
    """``POST /rooms/{room_id}/tasks/{job_full_name}``: queue a task (``202``).

    A job of another (non-global) room is ``404 job-not-found``.
    """
    principal = await request.principal()
    body = await request.json_body(TaskSubmit)
    row, positions = await submit(
        request.ctx,
        principal,
        request.path_params["room_id"],
        request.path_params["job_full_name"],
        body.payload,
    )
    headers = {
        "Location": f"{request.scope.get('root_path', '')}/tasks/{row.id}",
        "Retry-After": "1",
    }
    return PlainResponse(task_json(row, positions), status=202, headers=headers)


async def claim_task(request: PlainRequest) -> PlainResponse:
    """``POST /tasks/claim``: claim the oldest pending task of the worker's jobs.

    With ``Prefer: wait=N`` and nothing pending, wait until a task is submitted for one of
    the worker's jobs (in any server process) or N seconds pass.
    """
    ctx = request.ctx
    principal = await request.principal()
    body = await request.json_body(ClaimRequest)
    row = await claim_service.claim_once(ctx, body.worker_id, owner=principal)
    wait = _wait_seconds(request)
    headers: dict[str, str] = {}
    if row is None and wait:
        capped = min(wait, ctx.settings.long_poll_max_wait_seconds)
        headers["Preference-Applied"] = preference_applied(capped)
        # A client that hung up (killed worker, client timeout) is never given a task.
        async with ClientGone(request.receive) as client:
            row = await claim_service.claim_waiting(ctx, body.worker_id, capped, client=client)
    return PlainResponse(claim_json(row), headers=headers)


_UUID = TypeAdapter(uuid.UUID)
# A UUID as the server writes it (lower-case hex, hyphens): already canonical.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def task_id_param(request: PlainRequest) -> str:
    """The path's task id in canonical form; not a UUID is ``422``, as the reference's
    ``UUID`` path parameter answers (the same error FastAPI gives)."""
    raw: str = request.path_params["task_id"]
    if _CANONICAL_UUID.fullmatch(raw):
        return raw
    try:
        return str(_UUID.validate_python(raw))
    except ValidationError as exc:
        raise ValidationFailed(
            [{"loc": ["path", "task_id"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        ) from exc


async def get_task(request: PlainRequest) -> PlainResponse:
    """``GET /tasks/{task_id}``; with ``Prefer: wait=N``, answer once it is terminal."""
    ctx = request.ctx
    principal = await request.principal()
    task_id = task_id_param(request)
    wait = _wait_seconds(request)
    if not wait:
        row, positions = await task_status.read_visible_task(ctx, principal, task_id)
        return PlainResponse(task_json(row, positions))
    capped = min(wait, ctx.settings.long_poll_max_wait_seconds)
    row, positions, applied = await task_status.wait_for_task(ctx, principal, task_id, capped)
    headers = {"Preference-Applied": preference_applied(capped)} if applied else {}
    return PlainResponse(task_json(row, positions), headers=headers)


async def update_task(request: PlainRequest) -> PlainResponse:
    """``PATCH /tasks/{task_id}``: move a task along the state machine.

    Allowed to the claiming worker's owner, a superuser, or (to cancel) the submitter.
    """
    principal = await request.principal()
    task_id = task_id_param(request)
    settings = request.ctx.settings
    body = await request.json_body(TaskUpdate, limit=task_update_body_limit(settings))
    reported = body.reported()
    if "result" in reported:
        task_status.check_result_size(reported["result"], settings.max_task_result_bytes)
    row, positions = await task_status.set_task_status(
        request.ctx,
        task_id,
        body.status,
        error=body.error,
        actor=principal,
        reported=reported,
    )
    return PlainResponse(task_json(row, positions))


def task_update_body_limit(settings: JobLibSettings) -> int:
    """A task update's body limit: the ordinary one plus room for the largest result."""
    return settings.max_request_body_bytes + settings.max_task_result_bytes


TASK_ROUTES: list[PlainOperation] = [
    route(
        "POST",
        "/rooms/{room_id}/tasks/{job_full_name}",
        submit_task,
        body=TaskSubmit,
        response=TaskOut,
        status=202,
        summary="Submit a task to a job",
        errors=(400, 403, 404, 503),
        response_headers={
            "Location": "The task's URL: `<mount>/tasks/{id}`",
            "Retry-After": "Seconds to wait before reading the task",
        },
    ),
    route(
        "POST",
        "/tasks/claim",
        claim_task,
        body=ClaimRequest,
        response=ClaimResponse,
        summary="Claim the oldest pending task of a worker's jobs",
        errors=(403, 404),
        parameters=(prefer_wait_parameter("wait up to N seconds for a task to claim"),),
        response_headers={"Preference-Applied": "`wait=N` when the claim waited"},
    ),
    route(
        "GET",
        "/tasks/{task_id}",
        get_task,
        response=TaskOut,
        summary="Read a task",
        errors=(404, 422),
        parameters=(prefer_wait_parameter("wait up to N seconds for the task to finish"),),
        response_headers={"Preference-Applied": "`wait=N` when the read waited"},
    ),
    route(
        "PATCH",
        "/tasks/{task_id}",
        update_task,
        body=TaskUpdate,
        response=TaskOut,
        summary="Change a task's status",
        errors=(403, 404, 409),
    ),
]
