"""What a host passes to :func:`joblib_app.create_joblib_app`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from joblib_app.principal import Principal
from joblib_app.settings import JobLibSettings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from taskiq import AsyncBroker

    from joblib_app.extension import Extension
    from joblib_app.providers.backend import ResultBackend

Authenticate = Callable[[HTTPConnection], Awaitable[Principal | None]]
WritableRoomGuard = Callable[[Principal, str], Awaitable[None]]
ReadableRoomGuard = Callable[[Principal, str], Awaitable[bool]]
JobServeGuard = Callable[[Principal, str, str], Awaitable[bool]]
RoomsCleanedHook = Callable[[list[str]], Awaitable[None]]
MetricsAccess = Callable[[HTTPConnection], Awaitable[bool]]
InternalExecutor = Callable[[type["Extension"], dict[str, Any], str, str], Awaitable[None]]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./joblib.db"
# FastAPI's telemetry options with every signal off (see ``JoblibConfig.telemetry``).
TELEMETRY_OFF: Mapping[str, Any] = {"tracing": False, "metrics": False, "logs": False}


@dataclass
class JoblibConfig:
    """Configuration of one joblib sub-app.

    Everything the host customises is a plain callable or object here.

    Attributes:
        authenticate: async ``(HTTPConnection) -> Principal | None``; ``None`` answers 401.
            Serves HTTP requests and Socket.IO connections alike.
        database_url: SQLAlchemy async URL (``sqlite+aiosqlite://`` or
            ``postgresql+asyncpg://``). Ignored when ``engine`` is given.
        engine: an async engine the host already owns (the app will not dispose it).
        writable_room: async guard ``(principal, room_id)`` run before registering a job or
            submitting a task; raise (``ProblemError`` or ``HTTPException``) to refuse.
        can_read_room: async ``(principal, room_id) -> bool`` deciding who may read a room:
            follow ``room:{room_id}`` over Socket.IO, and read its jobs, tasks, workers and
            providers over REST (``403``; a single task of the room is ``404`` unless the
            caller submitted it or claimed it); default: any authenticated principal.
        on_rooms_cleaned: async hook given the room ids whose providers a worker cleanup
            removed.
        redis_key_prefix: prefix of every Redis key and channel the app uses.
        redis_url: enables Redis for cross-process notification, Socket.IO fan-out and
            (unless ``result_backend`` is given) the provider result backend.
        result_backend: any object satisfying :class:`~joblib_app.providers.backend.ResultBackend`.
        broker: taskiq broker for ``@internal`` jobs (default: ``InMemoryBroker``).
        internal_jobs: ``Extension`` subclasses that run server-side.
        executor: async ``(extension_cls, payload, room_id, task_id)`` that runs one internal
            task; default: :func:`joblib_app.internal.executor.database_executor` (in the
            server process, writing to the database).
        settings: tunables; default reads the environment and ``pyproject.toml``.
        socketio_cors_allowed_origins: origins allowed to open cross-origin Socket.IO
            connections (python-socketio's ``cors_allowed_origins``: a list, one origin, or
            ``"*"``). Default ``None``: same origin only.
        can_serve_job: async ``(principal, room_id, job_full_name) -> bool`` deciding who
            may register a worker for a job (``403`` if not); default: anyone.
        metrics_access: async ``(HTTPConnection) -> bool`` that may open ``/metrics`` to a
            request besides a superuser's (a scraper's token, a trusted network); default:
            superusers only.
        telemetry: FastAPI's native OpenTelemetry options for this app (FastAPI's
            ``telemetry`` argument, where the installed FastAPI has it). Default
            :data:`TELEMETRY_OFF`: a mounted app's requests cross the host first, and the
            host's FastAPI records them (and tells mounted FastAPI apps so); turned off,
            this app also skips FastAPI's per-request look-up of the global providers.
            Pass ``{}`` for FastAPI's defaults, e.g. when serving this app on its own.
    """

    authenticate: Authenticate
    database_url: str = DEFAULT_DATABASE_URL
    engine: AsyncEngine | None = None
    writable_room: WritableRoomGuard | None = None
    can_read_room: ReadableRoomGuard | None = None
    on_rooms_cleaned: RoomsCleanedHook | None = None
    redis_url: str | None = None
    redis_key_prefix: str = "joblib:"
    result_backend: ResultBackend | None = None
    broker: AsyncBroker | None = None
    internal_jobs: Sequence[type[Extension]] = field(default_factory=list)
    executor: InternalExecutor | None = None
    settings: JobLibSettings = field(default_factory=JobLibSettings)
    socketio_cors_allowed_origins: str | list[str] | None = None
    can_serve_job: JobServeGuard | None = None
    metrics_access: MetricsAccess | None = None
    telemetry: Mapping[str, Any] = field(default_factory=lambda: dict(TELEMETRY_OFF))
