"""The package's layers import one way: api -> services -> store, services -> realtime.

Read from the source (no import runs), so a new upward import fails here before review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "joblib_app"

# Per layer, the first-party modules (or packages) it must never import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "domain": ("joblib_app.",),  # only itself: see the exemption below
    "store": (
        "joblib_app.api",
        "joblib_app.services",
        "joblib_app.realtime",
        "joblib_app.problems",
    ),
    "services": ("joblib_app.api", "joblib_app.problems"),
    "realtime": ("joblib_app.api", "joblib_app.problems"),
    "internal": ("joblib_app.api",),
    "providers": ("joblib_app.api", "joblib_app.services"),
    "client": ("joblib_app.",),  # only itself, the domain and the Extension base
}
ALLOWED_PREFIXES: dict[str, tuple[str, ...]] = {
    "domain": ("joblib_app.domain",),
    "client": ("joblib_app.client", "joblib_app.domain", "joblib_app.extension"),
}
# Libraries a layer must not load at all.
FORBIDDEN_LIBRARIES: dict[str, tuple[str, ...]] = {
    "domain": ("fastapi", "starlette", "sqlalchemy", "sqlmodel", "pydantic", "socketio"),
    "client": ("fastapi", "starlette", "sqlalchemy", "sqlmodel", "uvicorn", "taskiq"),
    "store": ("fastapi", "starlette", "socketio"),
}
ROUTE_MODULES = ("jobs", "providers", "tasks", "workers", "task_routes")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_never_imports_upwards(layer: str) -> None:
    allowed = ALLOWED_PREFIXES.get(layer, ())
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(layer)
        for name in _imports(path)
        if any(name.startswith(prefix) for prefix in FORBIDDEN[layer])
        and not any(name == a or name.startswith(a + ".") for a in allowed)
    ]
    assert wrong == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_LIBRARIES))
def test_a_layer_loads_none_of_the_libraries_it_must_not(layer: str) -> None:
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(layer)
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN_LIBRARIES[layer]
    ]
    assert wrong == []


def test_no_route_module_imports_another() -> None:
    wrong = [
        f"api/{module}.py imports {name}"
        for module in ROUTE_MODULES
        for name in _imports(PACKAGE / "api" / f"{module}.py")
        if any(name.startswith(f"joblib_app.api.{other}") for other in ROUTE_MODULES)
    ]
    assert wrong == []
