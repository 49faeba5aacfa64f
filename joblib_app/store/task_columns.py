"""The task table's columns as the store reads them, and status conditions in SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, literal_column
from sqlalchemy.sql.elements import ColumnElement

from joblib_app.domain.statuses import ACTIVE_STATUSES, TaskStatus
from joblib_app.models import task_table

_T = task_table.c
TASK_COLUMNS = (
    _T.seq,
    _T.id,
    _T.job_id,
    _T.job_name,
    _T.room_id,
    _T.status,
    _T.worker_id,
    _T.error,
    _T.payload,
    _T.created_by,
    _T.created_at,
    _T.started_at,
    _T.completed_at,
    _T.result,
    _T.progress,
    _T.progress_message,
    _T.version,
    _T.attempt,
)
PENDING = TaskStatus.PENDING.value


# Partial indexes serve a query only when the planner can see that its condition implies the
# index's (``status = 'pending'``). PostgreSQL's generic plans, which prepared statements
# settle on, do not know bound values: with ``status = $1`` the claim would scan every task
# of the job, finished ones included. Inlining the literal keeps the index usable everywhere.
def status_literal(status: str) -> ColumnElement[str]:
    """``'status'`` written into the SQL (see the comment above)."""
    return literal_column(f"'{status}'")


def status_is(column: Any, *statuses: str) -> ColumnElement[bool]:
    """``column = 'x'`` or ``column IN ('x', 'y')`` with the statuses written into the SQL."""
    if len(statuses) == 1:
        return column == status_literal(statuses[0])  # type: ignore[no-any-return]
    return column.in_([status_literal(s) for s in statuses])  # type: ignore[no-any-return]


IS_PENDING = status_is(_T.status, PENDING)
IS_ACTIVE = status_is(_T.status, *ACTIVE_STATUSES)

# What a claim sets, in both drivers' claim statements.
CLAIM_VALUES: dict[str, Any] = {
    "status": TaskStatus.CLAIMED.value,
    "worker_id": bindparam("worker_id"),
    "version": _T.version + 1,
    "claimed_at": bindparam("now"),
}
