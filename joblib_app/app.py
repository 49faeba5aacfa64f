"""``create_joblib_app``: the job system as one FastAPI app, for a host to mount or extend."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import socketio
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send
from taskiq import AsyncBroker, InMemoryBroker

from joblib_app.api import jobs as jobs_api
from joblib_app.api import providers as providers_api
from joblib_app.api import tasks as tasks_api
from joblib_app.api import workers as workers_api
from joblib_app.api.docs import install_offline_docs
from joblib_app.api.openapi import complete_openapi
from joblib_app.api.plain import add_plain_routes
from joblib_app.api.routing import install_method_routing
from joblib_app.api.task_routes import TASK_ROUTES, task_update_body_limit
from joblib_app.body_limit import BodySizeLimit
from joblib_app.config import JoblibConfig
from joblib_app.context import AppContext
from joblib_app.dashboard import DashboardHub, install_dashboard
from joblib_app.domain.statuses import TaskStatus
from joblib_app.internal.executor import database_executor
from joblib_app.internal.registry import InternalRegistry, register_internal_tasks
from joblib_app.metrics import TaskTimings, metrics_endpoint
from joblib_app.problems import ProblemError, install_problem_handlers
from joblib_app.providers.backend import ResultBackend
from joblib_app.providers.memory import InMemoryResultBackend
from joblib_app.providers.redis_backend import RedisResultBackend
from joblib_app.realtime.notifier import InProcessNotifier, Notifier, RedisNotifier
from joblib_app.realtime.redis_guard import BackgroundSender, BoundedRedisManager
from joblib_app.realtime.socketio_server import create_socketio_server, install_handlers
from joblib_app.services.internal import ensure_internal_jobs
from joblib_app.services.stopping import ShutdownSignals, begin_stopping, reset_stopping
from joblib_app.services.task_status import set_task_status
from joblib_app.store.database import Database
from joblib_app.sweeper import SWEEPER_STOP, run_sweeper

logger = logging.getLogger(__name__)

# ``PATCH /tasks/{id}`` (at the end of the full path, whatever the mount): a task update,
# whose body may carry a result on top of the ordinary limit.
_TASK_UPDATE_PATH = re.compile(r"/tasks/[^/]+$")


class JoblibApp(FastAPI):
    """The job system as a FastAPI app: REST API, ``/socket.io``, sweeper and internal jobs.

    Mount it (``host.mount("/v1/joblib", joblib)``) and either pass ``joblib.lifespan`` to
    the host (``FastAPI(lifespan=joblib.lifespan)``, or nest it in the host's own) or let
    it start itself on the first request. Served on its own (``uvicorn module:joblib``), its
    own lifespan starts and stops it. A host extends it as any FastAPI app: routes,
    middleware and exception handlers it adds apply to every route, the task routes
    included.

    Attributes:
        sio: the python-socketio ``AsyncServer``, for hosts adding their own handlers.
        context: the running state (database, notifier, result backend, broker registry).
    """

    def __init__(self, config: JoblibConfig) -> None:
        # No trailing-slash redirects: Starlette builds their Location from the request's
        # Host header, which would send a client off-site (``Host: evil.example``).
        # The docs pages are served from the package's files (see api.docs).
        super().__init__(
            title="joblib-app",
            version="0.1.0",
            docs_url=None,
            redoc_url=None,
            redirect_slashes=False,
            lifespan=self.lifespan,
            **_telemetry_argument(config),
        )
        self.config = config
        settings = config.settings
        prefix = config.redis_key_prefix
        self.db = Database(url=config.database_url, engine=config.engine)
        notifier: Notifier = (
            RedisNotifier(
                config.redis_url,
                channel_prefix=f"{prefix}notify:",
                operation_timeout=settings.redis_operation_timeout_seconds,
            )
            if config.redis_url
            else InProcessNotifier()
        )
        result_backend: ResultBackend
        if config.result_backend is not None:
            result_backend = config.result_backend
        elif config.redis_url:
            result_backend = RedisResultBackend(
                config.redis_url,
                key_prefix=prefix,
                operation_timeout=settings.redis_operation_timeout_seconds,
                channel_prefix=f"{prefix}provider-key:",
            )
        else:
            result_backend = InMemoryResultBackend(settings.provider_cache_max_bytes)
        self.sio = create_socketio_server(
            redis_url=config.redis_url,
            channel=f"{prefix}socketio",
            cors_allowed_origins=config.socketio_cors_allowed_origins,
            connect_timeout=settings.socketio_connect_timeout_seconds,
            redis_timeout=settings.redis_operation_timeout_seconds,
        )
        self.broker: AsyncBroker = config.broker or InMemoryBroker()
        self.context = AppContext(
            config=config,
            settings=settings,
            db=self.db,
            notifier=notifier,
            sio=self.sio,
            result_backend=result_backend,
        )
        if config.redis_url:
            self.context.sender = BackgroundSender(settings.redis_operation_timeout_seconds)
        self.context.internal = self._register_internal_jobs()
        self.timings = TaskTimings(
            redis_url=config.redis_url,
            key_prefix=prefix,
            operation_timeout=settings.redis_operation_timeout_seconds,
            flush_seconds=settings.metrics_flush_seconds,
        )
        self.context.extras["task_timings"] = self.timings
        self.context.dispatch_hooks.append(self.timings.observe)
        self.dashboard = DashboardHub()
        self.context.dispatch_hooks.append(self.dashboard.changed)
        install_handlers(self.sio, lambda: self.context)

        self.state.joblib = self.context
        install_problem_handlers(self)
        install_method_routing(self.router)
        # First in the routing table (see add_plain_routes).
        add_plain_routes(self, TASK_ROUTES, tag="tasks")
        for module in (workers_api, jobs_api, tasks_api, providers_api):
            self.include_router(module.router)
        install_offline_docs(self)
        self.add_route("/metrics", metrics_endpoint, include_in_schema=False)
        install_dashboard(self, self.dashboard)
        # Mounted inside the app, engine.io answers at <mount>/socket.io/ whatever the
        # host's mount path and root path are.
        self.mount("/socket.io", socketio.ASGIApp(self.sio, socketio_path=None))
        self.add_middleware(BodySizeLimit, limit_for=self._body_limit)
        self._completed_openapi: dict[str, Any] | None = None

        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._sweeper_stop: asyncio.Event | None = None
        self._sweeper_task: asyncio.Task[None] | None = None
        self._shutdown_signals = ShutdownSignals(self.context)
        self._first_use_logged = False

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document of every route, completed with what the app really answers
        (problem+json errors, bearer security; see :mod:`joblib_app.api.openapi`)."""
        schema = super().openapi()
        # FastAPI builds it again when routes were added since; complete each build once.
        if schema is not self._completed_openapi:
            self._completed_openapi = complete_openapi(schema, self.context.settings)
        return schema

    def _register_internal_jobs(self) -> InternalRegistry | None:
        if not self.config.internal_jobs:
            return None
        executor = self.config.executor or database_executor(self.context)
        return register_internal_tasks(self.broker, self.config.internal_jobs, executor)

    def _body_limit(self, scope: Scope) -> int:
        """The body limit of a request (the routes with their own check it again)."""
        settings = self.context.settings
        path: str = scope["path"]
        if path.endswith("/results"):
            return settings.max_provider_result_bytes
        if scope["method"] == "PATCH" and _TASK_UPDATE_PATH.search(path):
            return task_update_body_limit(settings)
        return settings.max_request_body_bytes

    @property
    def started(self) -> bool:
        return self._started

    async def startup(self) -> None:
        """Create tables, connect Redis, start the broker and the sweeper. Idempotent."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            ctx = self.context
            await self.db.create_tables()
            await ctx.notifier.start()
            if ctx.sender is not None:
                ctx.sender.start()
            start_backend = getattr(ctx.result_backend, "start", None)
            if start_backend is not None:
                await start_backend()
            if ctx.internal is not None:
                await self.broker.startup()
                await ensure_internal_jobs(ctx, ctx.internal)
            await self.timings.start()
            self._sweeper_stop = asyncio.Event()
            ctx.extras[SWEEPER_STOP] = self._sweeper_stop
            self._sweeper_task = asyncio.create_task(
                run_sweeper(ctx, self._sweeper_stop), name="joblib-sweeper"
            )
            # The server's SIGTERM/SIGINT end open long-polls at once (see services.stopping).
            reset_stopping(ctx)
            self._shutdown_signals.install()
            self._started = True
            logger.info("joblib-app started (database: %s)", self.db.dialect)

    async def shutdown(self) -> None:
        """Stop the sweeper and the broker, close connections. Idempotent."""
        if not self._started:
            return
        self._started = False
        ctx = self.context
        begin_stopping(ctx)
        self._shutdown_signals.uninstall()
        await ctx.reconnects.close()
        if self._sweeper_stop is not None and self._sweeper_task is not None:
            self._sweeper_stop.set()
            await self._sweeper_task
        if ctx.internal is not None:
            if isinstance(self.broker, InMemoryBroker):
                await self._finish_in_process_tasks(self.broker)
            await self.broker.shutdown()
        await self.timings.stop()
        close_backend = getattr(ctx.result_backend, "close", None)
        if close_backend is not None:
            await close_backend()
        if ctx.sender is not None:
            await ctx.sender.stop()
        manager = self.sio.manager
        if isinstance(manager, BoundedRedisManager):
            await manager.close()
        await ctx.notifier.stop()
        await self.db.dispose()
        logger.info("joblib-app stopped")

    async def _finish_in_process_tasks(self, broker: InMemoryBroker) -> None:
        """Let internal tasks running in this process finish, for a grace period.

        Those still running then are failed, so that nobody waits on a task whose process
        is gone (the sweeper would only notice after ``internal_task_timeout_seconds``).
        """
        ctx = self.context
        grace = ctx.settings.internal_shutdown_grace_seconds
        if ctx.running_internal:
            logger.info(
                "Waiting up to %g s for %d internal task(s) running in this process",
                grace,
                len(ctx.running_internal),
            )
        try:
            # Shielded: on timeout stop waiting, without cancelling what is being waited on.
            await asyncio.wait_for(asyncio.shield(broker.wait_all()), grace)
        except TimeoutError:
            left = sorted(ctx.running_internal)
            logger.warning(
                "Shutting down with %d internal task(s) still running after %g s; failing %s",
                len(left),
                grace,
                ", ".join(left),
            )
            for task_id in left:
                try:
                    await set_task_status(
                        ctx,
                        task_id,
                        TaskStatus.FAILED,
                        error="The server shut down before the task finished",
                    )
                except ProblemError as exc:
                    # It finished (or was cancelled) in the meantime: nothing to fail.
                    logger.info("Internal task %s not failed at shutdown: %s", task_id, exc)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Start, then stop, the system: the app's own lifespan when it is served at the
        top level, and the one to pass a host (``FastAPI(lifespan=joblib.lifespan)``) or
        to enter in the host's own."""
        try:
            await self.startup()
        except Exception:
            logger.exception("joblib-app failed to start")
            raise
        try:
            yield
        finally:
            await self.shutdown()

    async def _start_on_first_use(self) -> None:
        # Concurrent first requests all get here: say it once.
        if self._first_use_logged:
            await self.startup()
            return
        self._first_use_logged = True
        logger.warning(
            "joblib-app is starting on its first request because the host did not run its "
            "lifespan; pass lifespan=joblib.lifespan to the host app to start at boot and "
            "stop cleanly on shutdown"
        )
        await self.startup()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Mounted, the app never sees the host's lifespan: without it, the first request
        # (HTTP or Socket.IO) starts the system.
        if not self._started and scope["type"] != "lifespan":
            await self._start_on_first_use()
        await super().__call__(scope, receive, send)


def _telemetry_argument(config: JoblibConfig) -> dict[str, Any]:
    """FastAPI's ``telemetry`` keyword, where the installed FastAPI has native telemetry
    (an older one has none to configure)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": dict(config.telemetry)}


def create_joblib_app(config: JoblibConfig) -> JoblibApp:
    """Build the job system described by ``config``: a FastAPI app, ready to mount."""
    return JoblibApp(config)
