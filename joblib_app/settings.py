"""Tunable settings, read from arguments, the environment and ``pyproject.toml``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
)


class JobLibSettings(BaseSettings):
    """Every knob of the job system.

    Sources, highest priority first: constructor arguments, environment variables with the
    ``ZNDRAW_JOBLIB_`` prefix, then ``[tool.zndraw.joblib]`` in the working directory's
    ``pyproject.toml``.
    """

    model_config = SettingsConfigDict(
        env_prefix="ZNDRAW_JOBLIB_",
        pyproject_toml_table_header=("tool", "zndraw", "joblib"),
        extra="ignore",
    )

    allowed_categories: list[str] = ["modifiers", "selections", "analysis"]
    worker_timeout_seconds: float = 60
    sweeper_interval_seconds: float = 30
    long_poll_max_wait_seconds: float = 60
    # The reference retried its select-then-update claim with these; a claim here is one
    # atomic statement (``FOR UPDATE SKIP LOCKED`` / ``UPDATE ... RETURNING``), never retried.
    claim_max_attempts: int = Field(
        default=10,
        description="Accepted for compatibility with the reference's settings and unused: "
        "a claim is one atomic statement, never retried.",
    )
    claim_base_delay_seconds: float = Field(
        default=0.01,
        description="Accepted for compatibility with the reference's settings and unused: "
        "a claim never sleeps between attempts.",
    )
    internal_task_timeout_seconds: float = 3600
    allowed_provider_categories: list[str] | None = None
    provider_result_ttl_seconds: int = 300
    provider_inflight_ttl_seconds: int = 30
    provider_long_poll_default_seconds: float = 5
    provider_long_poll_max_seconds: float = 30
    # Not in the reference's table: limits of our own.
    max_request_body_bytes: int = 1_048_576
    max_provider_result_bytes: int = 64 * 1_048_576
    redis_operation_timeout_seconds: float = 2.0
    # How long shutdown waits for internal tasks running inside the server process.
    internal_shutdown_grace_seconds: float = 10.0
    # Hostile input (issue 11): nesting depth of job/provider schemas and task payloads.
    max_json_depth: int = 64
    # Total bytes the in-memory provider result cache holds; the oldest are evicted first.
    provider_cache_max_bytes: int = 256 * 1_048_576
    # An engine.io session that has not connected (authenticated) a namespace by then is
    # closed.
    socketio_connect_timeout_seconds: float = 10.0
    # A task's result, measured as its compact JSON; task updates may be this much larger
    # than ``max_request_body_bytes``.
    max_task_result_bytes: int = 1_048_576
    # A task claimed but not started within this goes back to the head of its queue.
    claim_lease_seconds: float = 30.0
    # A dropped Socket.IO connection's workers are cleaned up only after this.
    worker_reconnect_grace_seconds: float = 10.0
    # Terminal tasks older than this (by ``completed_at``) are deleted by the sweeper;
    # ``None`` keeps every task.
    task_retention_seconds: float | None = Field(default=None, gt=0)
    # Rows one retention statement deletes: each batch is a short write of its own (on
    # SQLite it runs on the event loop: about 10 ms for 200 rows on a quiet 2-core machine).
    task_retention_batch_size: int = Field(default=200, gt=0)
    # How often a process adds its task timings to the shared Redis histograms.
    metrics_flush_seconds: float = 0.5
    # A dashboard stream re-reads the database at least this often (changes made by other
    # processes, heartbeats going stale); changes in its own process wake it at once.
    dashboard_refresh_seconds: float = 0.5

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, PyprojectTomlConfigSettingsSource(settings_cls))
