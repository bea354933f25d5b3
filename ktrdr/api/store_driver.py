"""The operations store's hot transactions on SQLite, run on the pooled DB-API connection.

Why this is hand-written: on SQLite, SQLAlchemy's ``Connection`` costs more per
statement than the database does. Measured on one progress update (the same prebuilt
``UPDATE ... RETURNING``, 3,000 calls, load average about 1, issue 13): through the
store 139 us, ``engine.begin()`` + ``execute()`` 115 us, the same on one connection
kept checked out 85 us (pool checkout, begin and commit gone; what is left is the
statement's cache key and compiled-cache lookup, the execution context, bind and
result processing, the result object), ``sqlite3`` directly 29 us. Keeping a
connection checked out alone left the store at 0.34-0.39 x the bare driver (target
0.5), and ``exec_driver_sql`` still builds an execution context while doing none of
the type handling; so the hot transactions (create, claim, progress, finish, release,
resume) run here: the store's progress update then takes 71 us, and the store is at
0.58 x the driver in ``benchmarks/bench_store_vs_driver.py`` (0.30 before). A finish
carrying the worker's series points (and ``finish_and_claim``, the handoff, with them)
runs here too, the points written by one ``executemany`` of the series upsert
(``INSERT ... ON CONFLICT DO UPDATE``) in the same transaction: kept to SQLAlchemy, that
transaction was 29% of the backend's busy time in ``benchmarks/bench_tiny_ops.py``
(py-spy; the upsert alone 7%).

What stays SQLAlchemy's, so the schema and the types stay in one place: each
statement is the store's own SQLAlchemy statement (:mod:`ktrdr.api.store_statements`,
and the series upsert of :mod:`ktrdr.api.series_store`), compiled once for the engine's
dialect (positional parameters); its values (each parameter set of an
``executemany``) go through the bind processors SQLAlchemy itself uses (JSON, aware
UTC datetimes, booleans, floats) and the returned columns through its result
processors, so a row here equals the row SQLAlchemy returns (the tests compare every
transition, and the series points written, both ways). The transaction
is the one SQLAlchemy runs on pysqlite: the driver's implicit ``BEGIN`` before the
first write, ``commit()`` at the end, ``rollback()`` on any error.

Errors and events: a statement that fails here (the driver, a processor, the commit)
is rolled back and :class:`Unavailable` tells the store to run the whole transaction
again through SQLAlchemy, which raises the store's usual errors and fires the
engine's ``handle_error`` listeners (the outage watch, the error metrics) if the
failure repeats; nothing of the failed attempt is left (it never committed). The
cost: a failure is met twice (a database locked by another process past the busy
timeout makes the caller wait two timeouts), and one that does not repeat is not
counted. Each statement that succeeds here calls the engine's
``after_cursor_execute`` listeners (so the outage watch sees the store come back)
with the held ``Connection`` and no execution context. While the engine has any
``before_cursor_execute`` listener (tracing's per-statement spans need SQLAlchemy's
execution context) or logs its SQL (``echo``), nothing runs here. PostgreSQL never
uses this path: its time is round trips and commits, and it meets the target through
SQLAlchemy.

One connection is kept checked out for this path, used by one transaction at a time;
a transaction that finds it busy runs through SQLAlchemy instead of waiting. After
``engine.dispose()`` it is closed at its next use and a new one is checked out, so
disposing the pool still lets go of every connection the store holds; one that
SQLAlchemy would consider lost (or that cannot roll back) is given up at once.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["ConnectionRows", "DriverPath", "RowValues", "Rows", "Unavailable"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: A returned row by column name (a dict here, SQLAlchemy's ``RowMapping`` there).
RowValues = Mapping[Any, Any]
_Processor = Callable[[Any], Any] | None
#: A bind whose value comes from the execution's parameters (not a literal).
_GIVEN = object()


class Rows(Protocol):
    """What a store transaction runs its statements through (either path)."""

    def first(
        self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None
    ) -> RowValues | None:
        """The first row ``statement`` returns, by column name, or None."""

    def scalar(self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row (None when there is no row)."""

    def execute_many(
        self, statement: sa.Executable, parameters: Sequence[Mapping[str, Any]]
    ) -> None:
        """``statement`` once per parameter set (each with the same names; no rows back)."""


class ConnectionRows:
    """:class:`Rows` through a SQLAlchemy ``Connection`` (PostgreSQL, and every fallback)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def first(
        self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None
    ) -> RowValues | None:
        row = self.conn.execute(statement, parameters).first()
        return None if row is None else row._mapping

    def scalar(self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None) -> Any:
        return self.conn.execute(statement, parameters).scalar()

    def execute_many(
        self, statement: sa.Executable, parameters: Sequence[Mapping[str, Any]]
    ) -> None:
        if parameters:
            self.conn.execute(statement, list(parameters))


class Unavailable(Exception):
    """This path cannot run the transaction now (nothing was written): use SQLAlchemy."""


class _Failed(Exception):
    """A statement failed on this path (the transaction is rolled back, then retried)."""


@contextlib.contextmanager
def _failing() -> Iterator[None]:
    """Any error inside (the driver, a processor, a missing parameter) as :class:`_Failed`."""
    try:
        yield
    except _Failed:
        raise
    except Exception as exc:
        raise _Failed(exc) from exc


@attrs.frozen
class _Compiled:
    """One statement compiled for SQLite: its SQL, how to bind, how to read a row."""

    sql: str
    #: (parameter name, literal value or _GIVEN, bind processor) in placeholder order.
    binds: tuple[tuple[str, Any, _Processor], ...]
    columns: tuple[str, ...]
    processors: tuple[_Processor, ...]
    #: Kept so the id() this is cached under is never reused by another statement.
    statement: Any


def _compile(
    statement: sa.Executable, names: Sequence[str], dialect: sa.Dialect
) -> _Compiled | None:
    """``statement`` compiled as SQLAlchemy would for these parameters; None if it does
    something this path does not (defaults computed in Python, expanding ``IN``,
    named parameters). Values SQL computes (``attempt + 1``) come back through
    ``RETURNING`` like every other column."""
    if not isinstance(statement, (sa.Insert, sa.Update, sa.Select)):
        return None
    keys = list(names) if isinstance(statement, sa.Insert) else None
    compiled: Any = statement.compile(dialect=dialect, column_keys=keys)
    if compiled.positiontup is None or compiled.insert_prefetch or compiled.update_prefetch:
        return None
    binds = []
    for name in compiled.positiontup:
        bind = compiled.binds.get(name)
        if bind is None or bind.expanding or bind.callable is not None:
            return None
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if name in names:
            binds.append((name, _GIVEN, processor))
        elif bind.required:
            return None
        else:
            binds.append((name, bind.value, processor))
    columns = list(statement.exported_columns)
    return _Compiled(
        sql=compiled.string,
        binds=tuple(binds),
        columns=tuple(str(column.key) for column in columns),
        processors=tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ),
        statement=statement,
    )


class DriverPath:
    """Runs store transactions on one pooled SQLite connection, below SQLAlchemy."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        #: The pool the held connection came from.
        self._pool = engine.pool
        self._cache: dict[tuple[int, tuple[str, ...]], _Compiled | None] = {}

    @staticmethod
    def suits(engine: Engine) -> bool:
        """True for engines this path serves (SQLite through pysqlite)."""
        return engine.dialect.name == "sqlite" and engine.dialect.paramstyle == "qmark"

    def run(self, work: Callable[[Rows], T]) -> T:
        """``work`` in one transaction here; raises :class:`Unavailable` (nothing
        written) when the store must run it through SQLAlchemy instead.

        Errors ``work`` raises itself (the live limit) roll back and propagate.
        """
        engine = self._engine
        if engine.dispatch.before_cursor_execute or engine.logger.isEnabledFor(logging.INFO):
            raise Unavailable("statements are traced or logged")
        if not self._lock.acquire(blocking=False):
            raise Unavailable("in use by another transaction")
        try:
            return self._transaction(work)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Return the held connection to the pool."""
        with self._lock:
            self._drop(invalidate=False)

    def _transaction(self, work: Callable[[Rows], T]) -> T:
        if self._conn is not None and self._pool is not self._engine.pool:
            # engine.dispose() replaced the pool: this connection goes with the old one.
            self._drop(invalidate=True)
        if self._conn is None:
            self._pool = self._engine.pool
            try:
                self._conn = self._engine.connect()
            except sa.exc.SQLAlchemyError as exc:
                # Cannot connect: SQLAlchemy's path reports it (events, errors).
                raise Unavailable(str(exc)) from None
        conn = self._conn
        raw = conn.connection.driver_connection
        assert raw is not None  # a live pooled connection
        try:
            result = work(_DriverRows(self, conn, raw))
            with _failing():
                raw.commit()
        except _Failed as failed:
            reason = failed.__cause__ or failed
            self._rollback(raw, disconnect=self._is_disconnect(reason, raw))
            logger.debug("store transaction handed to SQLAlchemy: %s", reason)
            raise Unavailable(str(reason)) from None
        except BaseException:
            self._rollback(raw, disconnect=False)
            raise
        return result

    def _is_disconnect(self, error: BaseException, raw: Any) -> bool:
        """Whether SQLAlchemy would give this connection up after ``error``."""
        if not isinstance(error, sqlite3.Error):
            return False
        driver_error: Any = error  # SQLAlchemy types it as its DB-API protocol's Error
        return bool(self._dialect.is_disconnect(driver_error, raw, None))

    def _rollback(self, raw: Any, *, disconnect: bool) -> None:
        """Roll back; a connection that is lost or cannot roll back is given up."""
        try:
            raw.rollback()
        except sqlite3.Error:
            disconnect = True
        if disconnect:
            self._drop(invalidate=True)

    def _drop(self, *, invalidate: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if invalidate:
                conn.invalidate()
            conn.close()
        except sa.exc.SQLAlchemyError:
            logger.debug("closing the store's held connection failed", exc_info=True)

    def compiled(self, statement: sa.Executable, names: tuple[str, ...]) -> _Compiled | None:
        key = (id(statement), names)
        try:
            return self._cache[key]
        except KeyError:
            pass
        compiled = _compile(statement, names, self._dialect)
        self._cache[key] = compiled
        return compiled

    def executed(
        self, conn: Connection, cursor: Any, sql: str, args: Any, *, many: bool = False
    ) -> None:
        """Tell the engine's ``after_cursor_execute`` listeners a statement succeeded."""
        listeners = self._engine.dispatch.after_cursor_execute
        if listeners:
            listeners(conn, cursor, sql, args, None, many)


class _DriverRows:
    """:class:`Rows` on the DB-API connection of a :class:`DriverPath` transaction."""

    def __init__(self, path: DriverPath, conn: Connection, raw: Any) -> None:
        self._path = path
        self._conn = conn
        self._raw = raw

    def _compiled(self, statement: sa.Executable, names: tuple[str, ...]) -> _Compiled:
        compiled = self._path.compiled(statement, names)
        if compiled is None:
            raise _Failed(f"statement not supported here: {statement}")
        return compiled

    @staticmethod
    def _args(compiled: _Compiled, given: Mapping[str, Any]) -> list[Any]:
        """The positional values for ``compiled``, through its bind processors."""
        args = []
        for name, value, processor in compiled.binds:
            if value is _GIVEN:
                value = given[name]
            args.append(value if processor is None else processor(value))
        return args

    def _row(
        self, statement: sa.Executable, parameters: Mapping[str, Any] | None
    ) -> tuple[_Compiled, tuple[Any, ...] | None]:
        given = parameters or {}
        with _failing():
            compiled = self._compiled(statement, tuple(given))
            args = self._args(compiled, given)
            cursor = self._raw.cursor()
            try:
                cursor.execute(compiled.sql, args)
                row = cursor.fetchone()
                self._path.executed(self._conn, cursor, compiled.sql, args)
            finally:
                cursor.close()
        return compiled, row

    def execute_many(
        self, statement: sa.Executable, parameters: Sequence[Mapping[str, Any]]
    ) -> None:
        if not parameters:
            return
        with _failing():
            # Compiled for the first set's names, as SQLAlchemy does; a set missing
            # one of them fails here (KeyError) and SQLAlchemy reports it.
            compiled = self._compiled(statement, tuple(parameters[0]))
            if compiled.columns:
                raise _Failed(f"rows returned by an executemany: {statement}")
            args = [self._args(compiled, given) for given in parameters]
            cursor = self._raw.cursor()
            try:
                cursor.executemany(compiled.sql, args)
                self._path.executed(self._conn, cursor, compiled.sql, args, many=True)
            finally:
                cursor.close()

    def first(
        self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None
    ) -> RowValues | None:
        compiled, row = self._row(statement, parameters)
        if row is None:
            return None
        with _failing():
            return {
                name: value if processor is None else processor(value)
                for name, value, processor in zip(
                    compiled.columns, row, compiled.processors, strict=True
                )
            }

    def scalar(self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None) -> Any:
        compiled, row = self._row(statement, parameters)
        if row is None:
            return None
        processor = compiled.processors[0]
        with _failing():
            return row[0] if processor is None else processor(row[0])
