"""Who may do what: the ownership rule (once), room guards, visibility of names.

The ownership rule is :func:`is_owner`; every "is this worker / provider / task yours, or
are you a superuser" goes through it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from starlette.exceptions import HTTPException

from joblib_app.context import AppContext
from joblib_app.domain.errors import (
    Forbidden,
    InvalidCategory,
    InvalidJobName,
    JobNotFound,
    ProblemError,
    ProviderNotFound,
    TaskNotFound,
    WorkerNotFound,
)
from joblib_app.domain.names import (
    RESERVED_ROOMS,
    is_plain_id,
    parse_full_name,
    provider_rooms,
    visible_rooms,
)
from joblib_app.domain.statuses import TaskStatus
from joblib_app.principal import Principal
from joblib_app.services.rows import Record
from joblib_app.store import jobs, providers, workers
from joblib_app.store.connection import Connection as Connection


def is_owner(principal: Principal, owner_id: str | None, *, superuser_may: bool) -> bool:
    """Whether ``principal`` owns what ``owner_id`` owns, or (if ``superuser_may``) is a
    superuser."""
    if superuser_may and principal.is_superuser:
        return True
    return owner_id is not None and owner_id == principal.id


def require_owner(
    principal: Principal, owner_id: str | None, thing: str, action: str, *, superuser_may: bool
) -> None:
    """``403`` (``Only the <thing>'s owner [or a superuser] may <action>``) unless
    :func:`is_owner`."""
    if not is_owner(principal, owner_id, superuser_may=superuser_may):
        who = f"the {thing}'s owner or a superuser" if superuser_may else f"the {thing}'s owner"
        raise Forbidden(f"Only {who} may {action}")


async def owned_worker(
    conn: Connection,
    principal: Principal,
    worker_id: str,
    *,
    action: str | None,
    superuser_may: bool = False,
) -> Record:
    """The worker ``worker_id`` if ``principal`` may ``action`` it, else ``404``/``403``.

    ``action=None``: another user's worker is ``404`` too, so that registration and room
    joins never reveal other users' workers.
    """
    row = await workers.get_worker(conn, worker_id) if is_plain_id(worker_id) else None
    if row is None:
        raise WorkerNotFound(worker_id)
    if action is None:
        if not is_owner(principal, row.user_id, superuser_may=False):
            raise WorkerNotFound(worker_id)
    else:
        require_owner(principal, row.user_id, "worker", action, superuser_may=superuser_may)
    return row


async def owned_worker_or_new(
    conn: Connection, principal: Principal, worker_id: str | None, now: datetime
) -> str:
    """The caller's worker named in a registration, or a new one for the caller."""
    if worker_id is None:
        return str((await workers.create_worker(conn, principal.id, now)).id)
    return str((await owned_worker(conn, principal, worker_id, action=None)).id)


async def owned_provider(ctx: AppContext, principal: Principal, provider_id: str) -> Record:
    """The provider ``provider_id`` if ``principal`` owns it or is a superuser."""
    if not is_plain_id(provider_id):
        raise ProviderNotFound(provider_id)
    async with ctx.db.read() as conn:
        row = await providers.get_provider(conn, provider_id)
    if row is None:
        raise ProviderNotFound(provider_id)
    require_owner(principal, row.user_id, "provider", "do this", superuser_may=True)
    return row


def may_update_task(principal: Principal, row: Record, target: TaskStatus) -> bool:
    """Who may move a task: a superuser, the owner of the claiming worker, or (to cancel)
    the user who submitted it. ``row`` carries ``worker_user_id``
    (see ``tasks.get_task_with_owner``)."""
    if is_owner(principal, row.worker_user_id, superuser_may=True):
        return True
    return target is TaskStatus.CANCELLED and is_owner(
        principal, row.created_by, superuser_may=False
    )


def check_category(category: str, allowed: Collection[str] | None) -> None:
    """``400 invalid-category`` unless the host allows ``category`` (or allows all)."""
    if allowed is not None and category not in allowed:
        raise InvalidCategory(
            f"Category '{category}' is not allowed; allowed: {', '.join(sorted(allowed))}"
        )


async def check_writable_room(ctx: AppContext, principal: Principal, room_id: str) -> None:
    """Run the host's room write guard; its refusals (a :class:`ProblemError`, or an
    ``HTTPException``) become problems."""
    guard = ctx.config.writable_room
    if guard is None:
        return
    try:
        await guard(principal, room_id)
    except ProblemError:
        raise
    except HTTPException as exc:
        raise ProblemError(
            exc.status_code, "room-not-writable", str(exc.detail), headers=exc.headers
        ) from exc


async def may_read_room(ctx: AppContext, principal: Principal, room_id: str) -> bool:
    """The host's ``can_read_room`` verdict (``True`` without one)."""
    guard = ctx.config.can_read_room
    return guard is None or await guard(principal, room_id)


async def check_readable_room(ctx: AppContext, principal: Principal, room_id: str) -> None:
    """``403 forbidden`` unless ``principal`` may read ``room_id``."""
    if not await may_read_room(ctx, principal, room_id):
        raise Forbidden(f"Not allowed to read room '{room_id}'")


async def check_readable_task(ctx: AppContext, principal: Principal, row: Record) -> None:
    """``404 task-not-found`` unless ``principal`` may see this task.

    Allowed: whoever may read its room, the user who submitted it, and the owner of the
    worker that claimed it. 404 rather than 403, so that task ids of private rooms reveal
    nothing.
    """
    if ctx.config.can_read_room is None or is_owner(principal, row.created_by, superuser_may=False):
        return
    if await may_read_room(ctx, principal, row.room_id):
        return
    if row.worker_id is not None:
        async with ctx.db.read() as conn:
            worker = await workers.get_worker(conn, row.worker_id)
        if worker is not None and is_owner(principal, worker.user_id, superuser_may=False):
            return
    raise TaskNotFound(row.id)


async def check_may_serve(
    ctx: AppContext, principal: Principal, room_id: str, job_full_name: str
) -> None:
    """``403 forbidden`` unless the host's ``can_serve_job`` lets ``principal`` register a
    worker for ``job_full_name``."""
    guard = ctx.config.can_serve_job
    if guard is not None and not await guard(principal, room_id, job_full_name):
        raise Forbidden(f"Not allowed to serve job '{job_full_name}'")


def check_reserved_room(principal: Principal, room_id: str, what: str) -> None:
    """``403`` for a registration in ``@global``/``@internal`` by a non-superuser."""
    if room_id in RESERVED_ROOMS and not principal.is_superuser:
        raise Forbidden(f"Registering {what} in {room_id} requires a superuser")


def check_visible_name(room_id: str, full_name: str) -> None:
    """``404 job-not-found`` unless a job of that name would be visible from ``room_id``."""
    parsed = parse_full_name(full_name)
    if parsed is None:
        raise InvalidJobName(full_name)
    if parsed.room_id not in visible_rooms(room_id):
        raise JobNotFound(full_name)


def check_visible_provider_name(room_id: str, full_name: str) -> None:
    """``404 provider-not-found`` unless ``full_name`` names a provider of a room visible
    from ``room_id``."""
    parsed = parse_full_name(full_name)
    if parsed is None or parsed.room_id not in provider_rooms(room_id):
        raise ProviderNotFound(full_name)


async def visible_job(conn: Connection, room_id: str, full_name: str) -> Record:
    """An active job visible from ``room_id``, else ``404 job-not-found``."""
    check_visible_name(room_id, full_name)
    job = await jobs.get_job(conn, full_name)
    if job is None or job.is_deleted:
        raise JobNotFound(full_name)
    return job
