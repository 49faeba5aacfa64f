"""Answering ``provider_request`` events: read, encode, upload the result (or a problem)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pydantic_core

from joblib_app.client.errors import JoblibClientError
from joblib_app.domain.errors import PROBLEM_TYPE_PREFIX, ProviderFailed
from joblib_app.extension import Provider

if TYPE_CHECKING:
    from joblib_app.client.http import ApiClient
    from joblib_app.client.registry import Registry

logger = logging.getLogger(__name__)

# The server keeps at most this much of a provider's error text for the readers.
_DETAIL_LIMIT = 2000


class ProviderAnswers:
    """Serves the provider reads the server dispatches to this worker.

    :meth:`answer` runs on the Socket.IO client's message thread: each read has its own,
    so a slow provider holds up no other read.
    """

    def __init__(self, api: ApiClient, registry: Registry) -> None:
        self._api = api
        self._registry = registry

    def answer(self, data: dict[str, Any]) -> None:
        """Answer one ``provider_request`` (``provider_name``, ``request_id``, ``params``).

        The result is uploaded JSON-encoded for JSON content types, raw bytes otherwise. A
        ``read`` that raises uploads a problem: its readers get a 502 with the exception's
        text, and the traceback stays in this worker's log.
        """
        provider_name = data.get("provider_name")
        request_id = data.get("request_id")
        registration = self._registry.provider(str(provider_name))
        if registration is None or not request_id:
            logger.warning("Ignoring provider_request for %s", provider_name)
            return
        content_type = registration.cls.content_type
        try:
            raw = data.get("params") or "{}"
            params = json.loads(raw) if isinstance(raw, str | bytes) else raw
            instance = registration.cls.model_validate(params)
            body = encode_result(instance.read(registration.handler), registration.cls)
        except Exception as exc:
            logger.exception("Provider %s failed request %s", provider_name, request_id)
            body = problem_body(exc)
            content_type = "application/problem+json"
        try:
            self._api.upload_provider_result(
                registration.provider_id, str(request_id), body, content_type
            )
        except JoblibClientError as exc:
            logger.warning("Could not upload %s result %s: %s", provider_name, request_id, exc)


def problem_body(exc: Exception) -> bytes:
    """The problem+json a provider uploads when ``read`` raised."""
    problem = {
        "type": PROBLEM_TYPE_PREFIX + ProviderFailed.problem_kind,
        "title": "Provider error",
        "status": 502,
        "detail": f"{type(exc).__name__}: {exc}"[:_DETAIL_LIMIT],
    }
    return json.dumps(problem).encode()


def encode_result(result: Any, provider: type[Provider]) -> bytes:
    """The upload body of a provider result, by the provider's content type."""
    content_type = provider.content_type.split(";", 1)[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return pydantic_core.to_json(result)
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result)
    if isinstance(result, str):
        return result.encode()
    raise TypeError(
        f"{provider.__name__}.read returned {type(result).__name__}; "
        f"content type {provider.content_type} needs bytes"
    )
