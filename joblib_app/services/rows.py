"""What the store hands the services: rows whose columns are read by name."""

from __future__ import annotations

from typing import TypeAlias

from joblib_app.store.connection import Row

# One alias, so that the services follow the store's row type in one place.
Record: TypeAlias = Row
