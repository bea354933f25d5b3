"""The operations store's statements, built once per store instead of once per call.

Building a SQLAlchemy statement (``update().where().values().returning()``) and
computing its cache key cost more than running it on SQLite, and most of a
PostgreSQL round trip (issue 13 profiled it at most of the store's time). Here each
statement the store runs often is built once, with bound parameters where the values
go, so a call only binds values and executes: SQLAlchemy memoizes a statement's cache
key on the statement object, and its compiled form in the engine's cache.

Transitions are one shape of ``UPDATE ... WHERE id AND status IN (...) [AND worker]
[AND attempt] SET ... RETURNING *``; :class:`Statements.transition` keeps one
statement per shape (allowed statuses, columns set, which guards), a small bounded
set. SQL expressions as values (``attempt + 1``) must be the shared ones defined
here, so a shape never depends on a per-call object. This module holds no state
about operations and runs nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa

from ktrdr.protocol import OperationStatus
from ktrdr.vocabulary import LIVE_STATUSES

__all__ = ["Statements"]

#: Bound parameter names of a transition's guards (values are bound as ``v_<column>``).
ID = "k_id"
WORKER = "k_worker"
ATTEMPT = "k_attempt"

_Shape = tuple[tuple[str, ...], tuple[tuple[str, int], ...], bool, bool]


class Statements:
    """Prebuilt statements over one operations table."""

    def __init__(self, table: sa.Table) -> None:
        self._table = table
        c = table.c
        #: Values that are SQL expressions (shared, so a shape stays the same object).
        self.next_attempt = c.attempt + 1
        self.previous_attempt = c.attempt - 1
        self.one_more_lost = c.lost_attempts + 1
        self._expressions = {
            id(self.next_attempt),
            id(self.previous_attempt),
            id(self.one_more_lost),
        }
        self._transitions: dict[_Shape, sa.Update] = {}
        self.insert = sa.insert(table).returning(*c)
        self.get = sa.select(table).where(c.id == sa.bindparam(ID))
        self.set_deadline = (
            sa.update(table)
            .where(c.id == sa.bindparam(ID))
            .values(deadline_at=sa.bindparam("v_deadline_at", type_=c.deadline_at.type))
            .returning(*c)
        )
        self.lost_attempts_of = sa.select(c.lost_attempts).where(c.id == sa.bindparam(ID))
        self.attempt_of = sa.select(c.attempt, c.status, c.worker_id).where(
            c.id == sa.bindparam(ID)
        )
        running = c.status == OperationStatus.RUNNING.value
        self.busy_workers = (
            sa.select(c.worker_id).distinct().where(running, c.worker_id.is_not(None))
        )
        self.running_on = sa.select(c.id).where(running, c.worker_id == sa.bindparam(WORKER))
        self.oldest_pending = (
            sa.select(c.id)
            .where(c.status == OperationStatus.PENDING.value, c.type == sa.bindparam("k_type"))
            .order_by(c.created_at, c.id)
            .limit(1)
        )
        cutoff = sa.bindparam("k_cutoff", type_=c.last_reported_at.type)
        self.unreported = (
            sa.select(table)
            .where(running, sa.or_(c.last_reported_at.is_(None), c.last_reported_at < cutoff))
            .order_by(c.last_reported_at, c.id)
        )
        self.count_live = (
            sa.select(sa.func.count())
            .select_from(table)
            .where(c.status.in_([sa.literal(s.value) for s in LIVE_STATUSES]))
        )

    def transition(
        self,
        *,
        allowed: Collection[OperationStatus],
        values: Mapping[str, Any],
        worker: bool,
        attempt: bool,
    ) -> sa.Update | None:
        """The conditional update for this shape, or None if a value is a foreign expression.

        Execute it with :meth:`parameters`.
        """
        statuses = tuple(OperationStatus(s).value for s in allowed)
        columns = []
        for name, value in values.items():
            if isinstance(value, sa.ClauseElement):
                if id(value) not in self._expressions:
                    return None
                columns.append((name, id(value)))
            else:
                columns.append((name, 0))
        shape: _Shape = (statuses, tuple(columns), worker, attempt)
        statement = self._transitions.get(shape)
        if statement is None:
            statement = self._build(shape, values)
            self._transitions[shape] = statement
        return statement

    def _build(self, shape: _Shape, values: Mapping[str, Any]) -> sa.Update:
        statuses, columns, worker, attempt = shape
        c = self._table.c
        # Fixed statuses as plain literals: an expanding IN would be re-rendered per call.
        conditions = [c.id == sa.bindparam(ID), c.status.in_([sa.literal(s) for s in statuses])]
        if worker:
            conditions.append(c.worker_id == sa.bindparam(WORKER))
        if attempt:
            conditions.append(c.attempt == sa.bindparam(ATTEMPT))
        assigned = {
            name: values[name] if key else sa.bindparam(f"v_{name}", type_=c[name].type)
            for name, key in columns
        }
        return sa.update(self._table).where(*conditions).values(assigned).returning(*c)

    @staticmethod
    def parameters(
        operation_id: str,
        values: Mapping[str, Any],
        *,
        worker_id: str | None,
        attempt: int | None,
    ) -> dict[str, Any]:
        """The bound values for a :meth:`transition` statement."""
        bound: dict[str, Any] = {ID: operation_id}
        if worker_id is not None:
            bound[WORKER] = worker_id
        if attempt is not None:
            bound[ATTEMPT] = attempt
        for name, value in values.items():
            if not isinstance(value, sa.ClauseElement):
                bound[f"v_{name}"] = value
        return bound
