"""joblib-app: a mountable job system for remote Python workers.

>>> from fastapi import FastAPI
>>> from joblib_app import JoblibConfig, Principal, create_joblib_app, static_token_authenticator
>>> joblib = create_joblib_app(JoblibConfig(
...     authenticate=static_token_authenticator({"token": Principal("alice")})))
>>> app = FastAPI(lifespan=joblib.lifespan)
>>> app.mount("/v1/joblib", joblib)

``create_joblib_app`` returns a FastAPI app: mount it, serve it on its own, or extend it
(routes, middleware, exception handlers) as any FastAPI app.

Names are imported on first use, so a worker importing ``joblib_app.client`` does not pay
for loading the server (FastAPI, SQLAlchemy, taskiq).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Category": "joblib_app.extension",
    "Extension": "joblib_app.extension",
    "Provider": "joblib_app.extension",
    "InMemoryResultBackend": "joblib_app.providers.memory",
    "InternalRegistry": "joblib_app.internal.registry",
    "register_internal_tasks": "joblib_app.internal.registry",
    "JobLibSettings": "joblib_app.settings",
    "JoblibApp": "joblib_app.app",
    "create_joblib_app": "joblib_app.app",
    "JoblibConfig": "joblib_app.config",
    "Principal": "joblib_app.principal",
    "ProblemError": "joblib_app.problems",
    "RedisResultBackend": "joblib_app.providers.redis_backend",
    "RedisListBroker": "joblib_app.internal.redis_broker",
    "ResultBackend": "joblib_app.providers.backend",
    "ResultBackendUnavailable": "joblib_app.providers.backend",
    "SchemaOutdated": "joblib_app.store.schema",
    "database_executor": "joblib_app.internal.executor",
    "rest_executor": "joblib_app.internal.executor",
    "static_token_authenticator": "joblib_app.auth",
}

__all__ = [
    "Category",
    "Extension",
    "InMemoryResultBackend",
    "InternalRegistry",
    "JobLibSettings",
    "JoblibApp",
    "JoblibConfig",
    "Principal",
    "ProblemError",
    "Provider",
    "RedisListBroker",
    "RedisResultBackend",
    "ResultBackend",
    "ResultBackendUnavailable",
    "SchemaOutdated",
    "create_joblib_app",
    "database_executor",
    "register_internal_tasks",
    "rest_executor",
    "static_token_authenticator",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'joblib_app' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from joblib_app.app import JoblibApp, create_joblib_app
    from joblib_app.auth import static_token_authenticator
    from joblib_app.config import JoblibConfig
    from joblib_app.extension import Category, Extension, Provider
    from joblib_app.internal.executor import database_executor, rest_executor
    from joblib_app.internal.redis_broker import RedisListBroker
    from joblib_app.internal.registry import InternalRegistry, register_internal_tasks
    from joblib_app.principal import Principal
    from joblib_app.problems import ProblemError
    from joblib_app.providers.backend import ResultBackend, ResultBackendUnavailable
    from joblib_app.providers.memory import InMemoryResultBackend
    from joblib_app.providers.redis_backend import RedisResultBackend
    from joblib_app.settings import JobLibSettings
    from joblib_app.store.schema import SchemaOutdated
