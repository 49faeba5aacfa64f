"""The task state machine: kept for older imports; the table is
:mod:`joblib_app.domain.statuses`."""

from __future__ import annotations

from joblib_app.domain.statuses import ALLOWED_TRANSITIONS, check_transition

__all__ = ["ALLOWED_TRANSITIONS", "check_transition"]
