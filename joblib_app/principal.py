"""The identity the host's ``authenticate`` callable hands to the job system."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``id`` is stored as a plain value on owned rows."""

    id: str
    is_superuser: bool = False
