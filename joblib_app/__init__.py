"""joblib-app: a mountable job system for remote Python workers.

>>> from fastapi import FastAPI
>>> from joblib_app import JoblibConfig, Principal, create_joblib_app, static_token_authenticator
>>> joblib = create_joblib_app(JoblibConfig(
...     authenticate=static_token_authenticator({"token": Principal("alice")})))
>>> app = FastAPI(lifespan=joblib.lifespan)
>>> app.mount("/v1/joblib", joblib)
"""

from joblib_app.app import JoblibApp, create_joblib_app
from joblib_app.auth import static_token_authenticator
from joblib_app.config import JoblibConfig
from joblib_app.extension import Category, Extension, Provider
from joblib_app.internal.executor import database_executor, rest_executor
from joblib_app.internal.registry import InternalRegistry, register_internal_tasks
from joblib_app.principal import Principal
from joblib_app.problems import ProblemError
from joblib_app.providers.backend import ResultBackend, ResultBackendUnavailable
from joblib_app.providers.memory import InMemoryResultBackend
from joblib_app.providers.redis_backend import RedisResultBackend
from joblib_app.settings import JobLibSettings

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
    "RedisResultBackend",
    "ResultBackend",
    "ResultBackendUnavailable",
    "create_joblib_app",
    "database_executor",
    "register_internal_tasks",
    "rest_executor",
    "static_token_authenticator",
]
