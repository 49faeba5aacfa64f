"""FastAPI's native telemetry on the app: off by default, on when the host asks for it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from starlette.requests import HTTPConnection

from joblib_app import JoblibConfig, Principal, create_joblib_app


class RecordingTracer(trace.NoOpTracer):
    """A tracer that keeps the path of each server span it was asked to start."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        attributes = kwargs.get("attributes") or {}
        self.names.append(f"{name} {attributes.get('url.path', '')}")
        return super().start_span(name, *args, **kwargs)


class RecordingProvider(trace.TracerProvider):
    """A configured provider (FastAPI treats a no-op one as telemetry off)."""

    def __init__(self) -> None:
        self.tracer = RecordingTracer()

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return self.tracer


async def _authenticate(conn: HTTPConnection) -> Principal | None:
    return Principal("alice")


@pytest.fixture
def provider() -> Iterator[RecordingProvider]:
    yield RecordingProvider()


async def _spans_of_a_request(tmp_path: Path, telemetry: Mapping[str, Any] | None) -> list[str]:
    options: dict[str, Any] = {} if telemetry is None else {"telemetry": telemetry}
    app = create_joblib_app(
        JoblibConfig(
            authenticate=_authenticate,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'telemetry.db'}",
            **options,
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://joblib") as client:
            response = await client.post("/tasks/claim", json={"worker_id": "nobody"})
    assert response.status_code == 404
    tracer = options.get("telemetry", {}).get("tracer_provider")
    return list(tracer.tracer.names) if tracer is not None else []


async def test_telemetry_is_off_by_default(
    tmp_path: Path, provider: RecordingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even with a global tracer provider configured, the app records nothing itself.
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    assert await _spans_of_a_request(tmp_path, None) == []
    assert provider.tracer.names == []


async def test_telemetry_the_host_asks_for_records_the_task_routes(
    tmp_path: Path, provider: RecordingProvider
) -> None:
    spans = await _spans_of_a_request(tmp_path, {"tracer_provider": provider})
    assert "POST /tasks/claim" in spans, spans
