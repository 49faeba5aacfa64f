"""Ready-made ``authenticate`` callables for common cases."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import HTTPConnection

from joblib_app.config import Authenticate
from joblib_app.principal import Principal


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = conn.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def static_token_authenticator(tokens: Mapping[str, Principal]) -> Authenticate:
    """Authenticate by looking the bearer token up in a fixed table.

    >>> authenticate = static_token_authenticator({"s3cret": Principal("alice")})
    """
    table = dict(tokens)

    async def authenticate(conn: HTTPConnection) -> Principal | None:
        token = bearer_token(conn)
        return table.get(token) if token is not None else None

    return authenticate
