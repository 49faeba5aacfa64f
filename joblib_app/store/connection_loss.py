"""Telling a lost database connection from every other database error.

PostgreSQL connections die under a running server: ``pg_terminate_backend``, a failover,
a network cut, or a connection left mid-operation by a cancelled request (asyncpg then
says "another operation is in progress"). Such a request did nothing wrong: a read is
retried once, anything else answers ``503`` with ``Retry-After`` (see the routes).
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, DisconnectionError

from joblib_app.domain.errors import DatabaseUnavailable

# asyncpg's classes, by name: the driver is an optional dependency.
_LOST = frozenset(
    {
        "AdminShutdownError",
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "CrashShutdownError",
    }
)
_LOST_MESSAGES = (
    # asyncpg's protocol in a state it cannot leave: mid-operation after a cancellation,
    # or consuming a server's error when the server terminated the connection
    # ("cannot switch to state 11; another operation (2) is in progress").
    "another operation",
    "connection is closed",
    "connection was closed",
)


def is_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database connection was lost."""
    current: BaseException | None = exc
    for _ in range(6):
        if current is None:
            return False
        if isinstance(current, DisconnectionError):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if any(cls.__name__ in _LOST for cls in type(current).__mro__):
            return True
        if isinstance(current, ConnectionError):
            return True
        message = str(current).lower()
        if any(text in message for text in _LOST_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def database_unavailable() -> DatabaseUnavailable:
    """``503 database-unavailable`` with ``Retry-After: 1``."""
    return DatabaseUnavailable()
