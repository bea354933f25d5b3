"""The operations store: operations persisted in SQLite (default) or PostgreSQL.

SQLAlchemy 2 Core over the ``operations`` table and its series points
(``ktrdr.api.series_store``); the same code runs on both engines
and the same tests run against both. Every status transition is one conditional
``UPDATE ... WHERE status IN (...) RETURNING`` inside a transaction, so two callers
racing for the same operation (a worker's report and a user's cancel, the orphan
detector and a late heartbeat) cannot both win: the loser gets
:class:`~ktrdr.errors.InvalidTransition` naming the status it found. Times are aware UTC datetimes
passed in by the caller (its injected clock); this module never reads the clock.
It never logs the database password. On SQLite, the hot transactions (create, claim,
progress, finish) run the same statements below SQLAlchemy's ``Connection``, on the
pooled DB-API connection (:mod:`ktrdr.api.store_driver` says why and what it keeps).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine

from ktrdr.api.attempts import AttemptState, CurrentAttempts, lost_attempt, stale_attempt
from ktrdr.api.migrations import SchemaUpgrade, upgrade_schema
from ktrdr.api.series_store import (
    Points,
    define_series_table,
    delete_series,
    read_series,
    upsert_points,
    upsert_statement,
)
from ktrdr.api.store_driver import ConnectionRows, DriverPath, Rows, RowValues, Unavailable
from ktrdr.api.store_pages import (
    MAX_COUNTED,
    ListPosition,
    count_statement,
    filter_conditions,
    page_statement,
)
from ktrdr.api.store_statements import Statements
from ktrdr.config import DatabaseSettings, DbEngine, env_name
from ktrdr.errors import (
    ConfigurationError,
    DuplicateOperation,
    InvalidTransition,
    LiveLimitReached,
    OperationNotFound,
    StaleAttempt,
    StoreError,
)
from ktrdr.protocol import OperationStatus, OperationType
from ktrdr.vocabulary import FINISHED_STATUSES, LIVE_STATUSES

__all__ = [
    "FINISHED_STATUSES",
    "LIVE_STATUSES",
    "MAX_COUNTED",
    "DuplicateOperation",
    "InvalidTransition",
    "ListPosition",
    "LiveLimitReached",
    "OperationNotFound",
    "OperationPage",
    "OperationRecord",
    "OperationStore",
    "ProgressStamp",
    "SeriesRecord",
    "StaleAttempt",
    "StoreError",
    "database_url",
    "make_engine",
    "unreachable_error",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
UTC = datetime.timezone.utc
TABLE_NAME = "operations"
MAX_PAGE = 1000
#: How long a new SQLite connection retries switching a locked fresh file to WAL.
_WAL_SWITCH_TIMEOUT_S = 30.0
_WAL_SWITCH_RETRY_S = 0.02
#: PostgreSQL: how long a new connection may take (an unreachable server fails a
#: request within this, instead of the operating system's minutes-long TCP timeout).
_PG_CONNECT_TIMEOUT_S = 5
#: PostgreSQL: connections older than this are replaced (proxies and firewalls drop
#: idle connections silently; ``pool_pre_ping`` catches the rest).
_PG_POOL_RECYCLE_S = 1800
#: Key of the PostgreSQL advisory lock that serialises creations (the live-count bound).
_CREATE_LOCK_KEY = 0x6B74_7264_7200  # "ktrdr"
_ADVISORY_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")


@attrs.frozen(kw_only=True)
class OperationRecord:
    """One operation as stored."""

    id: str
    type: OperationType
    status: OperationStatus
    parameters: Mapping[str, Any]
    progress: Mapping[str, Any] | None
    result: Mapping[str, Any] | None
    error: str | None
    worker_id: str | None
    #: True when the operation was re-queued to continue from its checkpoint.
    resume: bool
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    #: Last time a worker reported this operation (start, progress, heartbeat).
    last_reported_at: datetime.datetime | None
    #: W3C ``traceparent`` of the span that began the current attempt (None: not traced).
    trace_parent: str | None = None
    #: The number of the latest dispatch (0: never dispatched).
    attempt: int = 0
    #: Attempts lost with their worker since creation or the last resume by hand.
    lost_attempts: int = 0
    #: How long one attempt may run, in seconds (None: no limit).
    timeout_s: float | None = None
    #: When the running attempt times out (None: no limit).
    deadline_at: datetime.datetime | None = None
    #: When the running attempt's progress last changed (or it started).
    progressed_at: datetime.datetime | None = None

    @property
    def retry(self) -> bool:
        """True when the next attempt retries a lost one (resume from a checkpoint if any)."""
        return self.lost_attempts > 0

    def attempt_state(self) -> AttemptState:
        """Its current attempt, for fencing."""
        return AttemptState(
            operation_id=self.id,
            attempt=self.attempt,
            status=self.status,
            worker_id=self.worker_id,
        )


@attrs.frozen(kw_only=True)
class ProgressStamp:
    """One heartbeat's news about a running operation, for :meth:`OperationStore.stamp_many`."""

    operation_id: str
    worker_id: str
    #: The attempt the worker runs: the stamp is dropped unless it is the current one.
    attempt: int
    #: When the worker reported it (becomes ``last_reported_at``).
    at: datetime.datetime
    #: The progress to record, or None to only record the time.
    progress: Mapping[str, Any] | None = None
    #: When the progress last changed (becomes ``progressed_at``); None: it did not.
    progressed_at: datetime.datetime | None = None
    #: Series points the heartbeat carried, if any.
    series: Points | None = None


@attrs.frozen(kw_only=True)
class SeriesRecord:
    """An operation's stored series points and its type (which says what x counts)."""

    type: OperationType
    points: Mapping[str, builtins.list[tuple[int, float]]]


@attrs.frozen(kw_only=True)
class OperationPage:
    """One page of a listing, whether more follow, and how many matched in all."""

    items: tuple[OperationRecord, ...]
    #: How many operations matched, when at most the count's cap; None when more did.
    total: int | None
    #: True when operations after the last item match too (there is a next page).
    more: bool = False


class UtcDateTime(sa.types.TypeDecorator[datetime.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every engine.

    SQLite has no time zones: values are stored as naive UTC and marked UTC on the way
    out. A naive datetime from a caller is refused (its zone would be a guess).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            message = f"expected an aware datetime (UTC), got naive {value.isoformat()}"
            raise ValueError(message)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, :meth:`process_bind_param` and SQLAlchemy's DATETIME text in one step.

        The text is the one SQLAlchemy's SQLite ``DATETIME`` stores by default
        (``2026-01-01 08:30:15.123456``), written by ``datetime.isoformat`` instead of
        its %-formatting: 0.5 us a value instead of 2.6, two to four values in every
        transition (issue 13). ``tests/unit/api/test_store.py`` checks that both write the
        same text.
        """
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime.datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None or value.utcoffset() is None:
                message = f"expected an aware datetime (UTC), got naive {value.isoformat()}"
                raise ValueError(message)
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _define_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE_NAME,
        metadata,
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parameters", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("progress", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("resume", sa.Boolean, nullable=False, default=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=True),
        sa.Column("finished_at", UtcDateTime, nullable=True),
        sa.Column("last_reported_at", UtcDateTime, nullable=True),
        sa.Column("trace_parent", sa.String(55), nullable=True),
        sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("lost_attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("timeout_s", sa.Float, nullable=True),
        sa.Column("deadline_at", UtcDateTime, nullable=True),
        sa.Column("progressed_at", UtcDateTime, nullable=True),
        # One index per listing filter, each ending in the listing order (revision 0004).
        sa.Index(f"ix_{TABLE_NAME}_created_id", "created_at", "id"),
        sa.Index(f"ix_{TABLE_NAME}_status_created_id", "status", "created_at", "id"),
        sa.Index(f"ix_{TABLE_NAME}_type_created_id", "type", "created_at", "id"),
        sa.Index(f"ix_{TABLE_NAME}_type_status_created_id", "type", "status", "created_at", "id"),
        sa.Index(f"ix_{TABLE_NAME}_finished", "finished_at"),
    )


def database_url(settings: DatabaseSettings) -> sa.URL:
    """The SQLAlchemy URL for the settings (its repr and str hide the password)."""
    if settings.engine is DbEngine.SQLITE:
        return sa.URL.create("sqlite+pysqlite", database=str(settings.path))
    return sa.URL.create(
        "postgresql+psycopg",
        username=settings.user,
        password=settings.password.reveal(),
        host=settings.host,
        port=settings.port,
        database=settings.name,
    )


def unreachable_error(settings: DatabaseSettings, exc: sa.exc.OperationalError) -> StoreError:
    """The error for a database that cannot be reached or opened: the variables to check.

    The URL is shown with its password masked and the password is cut from the
    driver's reason.
    """
    fields = attrs.fields(DatabaseSettings)
    if settings.engine is DbEngine.SQLITE:
        variables = env_name(fields.path)
    else:
        checked = (fields.host, fields.port, fields.name, fields.user, fields.password)
        variables = ", ".join(env_name(field) for field in checked)
    reason = " ".join(str(exc.orig).split())
    secret = settings.password.reveal()
    if secret:
        reason = reason.replace(secret, "********")
    url = database_url(settings).render_as_string(hide_password=True)
    message = f"cannot open the operations database {url} ({reason}); check {variables}"
    return StoreError(message)


def make_engine(url: sa.URL | str, *, echo: bool = False) -> Engine:
    """An engine for ``url``; for a SQLite file, its directory is created if missing.

    Raises ``ConfigurationError`` naming KTRDR_DB_PATH when that directory cannot be
    created.
    """
    url = sa.make_url(url)
    if url.get_backend_name() == "sqlite":
        _ensure_sqlite_directory(url.database)
        engine = sa.create_engine(url, echo=echo, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    # pool_pre_ping: after an outage, connections it killed are replaced on checkout,
    # so the backend recovers without a restart.
    return sa.create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_recycle=_PG_POOL_RECYCLE_S,
        connect_args={"connect_timeout": _PG_CONNECT_TIMEOUT_S},
    )


def _ensure_sqlite_directory(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    directory = Path(database).parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        variable = env_name(attrs.fields(DatabaseSettings).path)
        problem = (
            f"{variable}={database!r}: cannot create the database directory "
            f"{str(directory)!r} ({reason}); expected a path in a writable directory"
        )
        raise ConfigurationError([problem]) from None


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers proceed while one writer commits (the backend is threaded).

    Switching a file to WAL needs it to itself and SQLite does not wait for that (no
    busy handler), so a connection opening a fresh file while another process creates
    the schema retries until the file is in WAL mode (switched by either of them).
    """
    cursor = dbapi_connection.cursor()
    try:
        deadline = time.monotonic() + _WAL_SWITCH_TIMEOUT_S
        while True:
            try:
                (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
                if mode != "wal":
                    cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(_WAL_SWITCH_RETRY_S)
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _aware(name: str, value: datetime.datetime) -> datetime.datetime:
    """Refuse naive datetimes up front, naming the argument (their zone would be a guess)."""
    if not isinstance(value, datetime.datetime) or value.utcoffset() is None:
        message = f"{name} must be an aware datetime (UTC), got {value!r}"
        raise ValueError(message)
    return value


def _json(field: str, value: Any) -> Any:
    """Refuse values that are not plain JSON (NaN, sets, objects) with the field named."""
    if value is None:
        return None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        message = f"operation {field} must be JSON (finite numbers, string keys): {exc}"
        raise ValueError(message) from None
    return value


class OperationStore:
    """Creates, reads, transitions and deletes operations in one database table.

    Build it with :meth:`open` (from settings) or :meth:`open_url`; both bring the
    schema to the newest revision (:mod:`ktrdr.api.migrations`). ``schema`` names a
    PostgreSQL schema to hold the table (tests use one per test); it must already
    exist. Safe to share between threads.

    Transitions are serialised by one lock and recorded in the book of current
    attempts (:mod:`ktrdr.api.attempts`), which :meth:`current_attempt` answers from:
    one store per database, in the one process that changes operations.
    """

    def __init__(self, *, engine: Engine, schema: str | None = None) -> None:
        self._engine = engine
        #: Called with each record that just reached a final status (metrics).
        self._finish_listeners: builtins.list[Callable[[OperationRecord], None]] = []
        #: Called with each record queued again after a lost attempt, and the cause.
        self._retry_listeners: builtins.list[Callable[[OperationRecord, str], None]] = []
        self._metadata = sa.MetaData(schema=schema)
        self._table = _define_table(self._metadata)
        self._series = define_series_table(self._metadata)
        self._upsert_series = upsert_statement(self._series, engine.dialect.name)
        self._postgres = engine.dialect.name == "postgresql"
        self._attempts = CurrentAttempts()
        self._statements = Statements(self._table)
        #: SQLite: the hot transactions below SQLAlchemy's Connection (store_driver).
        self._driver = DriverPath(engine) if DriverPath.suits(engine) else None

    @classmethod
    def open(cls, settings: DatabaseSettings) -> OperationStore:
        """Connect as the settings say and upgrade the schema (the backend's startup).

        Raises :class:`StoreError` naming the variables to check when the database
        cannot be reached or opened (the password is never part of the message).
        """
        url = database_url(settings)
        try:
            return cls.open_url(url, echo=settings.echo)
        except sa.exc.OperationalError as exc:
            raise unreachable_error(settings, exc) from None

    @classmethod
    def open_url(
        cls, url: sa.URL | str, *, echo: bool = False, schema: str | None = None
    ) -> OperationStore:
        """Connect to an explicit URL (tests, benchmarks) and upgrade the schema."""
        engine = make_engine(url, echo=echo)
        logger.info("operations store: %s", engine.url.render_as_string(hide_password=True))
        store = cls(engine=engine, schema=schema)
        try:
            store.create_schema()
        except Exception:
            engine.dispose()
            raise
        return store

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for health checks and tests)."""
        return self._engine

    @property
    def metadata(self) -> sa.MetaData:
        """The tables this code reads and writes (the migrations must produce them)."""
        return self._metadata

    def create_schema(self) -> SchemaUpgrade:
        """Upgrade the schema to the newest revision (Alembic; idempotent, data kept)."""
        return upgrade_schema(self._engine, schema=self._metadata.schema)

    def add_finish_listener(self, listener: Callable[[OperationRecord], None]) -> None:
        """Call ``listener`` with every operation this store moves to a final status.

        Called after the transaction committed, in the thread that made the change,
        once per operation (a transition happens once); a listener must be quick and
        must not raise.
        """
        self._finish_listeners.append(listener)

    def add_retry_listener(self, listener: Callable[[OperationRecord, str], None]) -> None:
        """Call ``listener`` with every operation queued again after a lost attempt, and
        the cause :meth:`lose` was given (after the commit; quick, must not raise).
        """
        self._retry_listeners.append(listener)

    def _finished(self, record: OperationRecord) -> OperationRecord:
        for listener in self._finish_listeners:
            listener(record)
        return record

    def close(self) -> None:
        """Release every pooled connection."""
        if self._driver is not None:
            self._driver.close()
        self._engine.dispose()

    # --- create and read --------------------------------------------------------------

    def create(
        self,
        *,
        operation_type: OperationType,
        parameters: Mapping[str, Any],
        now: datetime.datetime,
        operation_id: str | None = None,
        max_live: int | None = None,
        trace_parent: str | None = None,
        timeout_s: float | None = None,
    ) -> OperationRecord:
        """Insert a pending operation (:meth:`create_and_claim` without a claim)."""
        record, _ = self.create_and_claim(
            operation_type=operation_type,
            parameters=parameters,
            now=now,
            operation_id=operation_id,
            max_live=max_live,
            trace_parent=trace_parent,
            timeout_s=timeout_s,
        )
        return record

    def create_and_claim(
        self,
        *,
        operation_type: OperationType,
        parameters: Mapping[str, Any],
        now: datetime.datetime,
        operation_id: str | None = None,
        max_live: int | None = None,
        trace_parent: str | None = None,
        timeout_s: float | None = None,
        claim_for: Sequence[str] = (),
    ) -> tuple[OperationRecord, tuple[OperationRecord, str] | None]:
        """Insert a pending operation; its id is a new uuid4 hex unless given.

        With ``claim_for`` (idle workers of its type, best first), the same transaction
        then claims the oldest pending operation of the type (the new one unless older
        ones wait) for the first of them the store has running nothing, as
        :meth:`mark_running` does: the created record, and the claimed record with its
        worker (None when every worker named runs something). One transaction: the
        claim is never seen without the insert.

        ``trace_parent`` is the ``traceparent`` of the span its first attempt continues;
        ``timeout_s`` bounds each attempt's running time (None: no limit).

        With ``max_live``, refuses with :class:`LiveLimitReached` when the pending and
        running operations would then number more than ``max_live``; the insert and
        the count share one serialised transaction, so concurrent creations cannot
        overshoot the bound.
        """
        new_id = operation_id or uuid.uuid4().hex
        values = {
            "id": new_id,
            "type": OperationType(operation_type).value,
            "status": OperationStatus.PENDING.value,
            "parameters": _json("parameters", dict(parameters)),
            "progress": None,
            "result": None,
            "error": None,
            "worker_id": None,
            "resume": False,
            "created_at": _aware("now", now),
            "trace_parent": trace_parent,
            "attempt": 0,
            "lost_attempts": 0,
            "timeout_s": _timeout(timeout_s),
        }

        def insert(rows: Rows) -> RowValues:
            if self._postgres:
                rows.scalar(_ADVISORY_LOCK, {"key": _CREATE_LOCK_KEY})
            # Insert first: on SQLite the insert takes the write lock, so the count
            # below cannot interleave with another creation's.
            row = rows.first(self._statements.insert, values)
            assert row is not None  # INSERT ... RETURNING returns the row
            if max_live is not None:
                live = int(rows.scalar(self._statements.count_live))
                if live > max_live:
                    raise LiveLimitReached(live=live - 1, limit=max_live)
            self._claim_first(rows, operation_type, claim_for, now, claimed)
            return row

        claimed: builtins.list[tuple[OperationRecord, str]] = []
        try:
            # A claim is a transition: the book of attempts learns it under the lock.
            with self._attempts.lock if claim_for else contextlib.nullcontext():
                row = self._run(insert)
                if claimed:
                    self._attempts.record(claimed[0][0].attempt_state())
        except sa.exc.IntegrityError:
            raise DuplicateOperation(new_id) from None
        record = _record(row)
        if claimed and claimed[0][0].id == record.id:
            record = claimed[0][0]
        return record, claimed[0] if claimed else None

    def get(self, operation_id: str) -> OperationRecord:
        """The operation with this id; raises :class:`OperationNotFound`."""
        with self._engine.connect() as conn:
            row = conn.execute(self._statements.get, {"k_id": operation_id}).first()
        if row is None:
            raise OperationNotFound(operation_id)
        return _record(row._mapping)

    def list(
        self,
        *,
        status: OperationStatus | None = None,
        operation_type: OperationType | None = None,
        limit: int = 100,
        offset: int = 0,
        after: ListPosition | None = None,
        include_result: bool = True,
        count_cap: int = MAX_COUNTED,
    ) -> OperationPage:
        """A page of operations, newest first; whether more follow; how many matched.

        ``after`` (the previous page's last position) pages by key, reading only the
        page however deep it is; ``offset`` skips rows (cost grows with it). The total
        is counted up to ``count_cap`` (None above it). Without ``include_result`` the
        result column is not read (each record's is None).
        """
        if not 1 <= limit <= MAX_PAGE or offset < 0 or (offset and after is not None):
            message = (
                f"expected 1 <= limit <= {MAX_PAGE}, offset >= 0, and not both offset and "
                f"after; got limit={limit}, offset={offset}, after={after}"
            )
            raise ValueError(message)
        table = self._table
        conditions = filter_conditions(table, status=status, operation_type=operation_type)
        if after is not None:
            after = ListPosition(created_at=_aware("after", after.created_at), id=after.id)
        query = page_statement(
            table,
            conditions=conditions,
            limit=limit + 1,
            offset=offset,
            after=after,
            include_result=include_result,
        )
        counting = count_statement(table, conditions=conditions, cap=count_cap + 1)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
            counted = int(conn.execute(counting).scalar_one())
        items = tuple(_record(r._mapping) for r in rows[:limit])
        total = counted if counted <= count_cap else None
        return OperationPage(items=items, total=total, more=len(rows) > limit)

    def count_live(self) -> int:
        """How many operations are pending or running."""
        with self._engine.connect() as conn:
            return self._count(conn, LIVE_STATUSES)

    def count_live_by_type(self) -> dict[tuple[OperationType, OperationStatus], int]:
        """Pending and running operations, counted by (type, status), in one query."""
        table = self._table
        query = (
            sa.select(table.c.type, table.c.status, sa.func.count())
            .where(table.c.status.in_([s.value for s in LIVE_STATUSES]))
            .group_by(table.c.type, table.c.status)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            (OperationType(kind), OperationStatus(status)): int(count)
            for kind, status, count in rows
        }

    def pending(
        self, *, operation_type: OperationType | None = None, limit: int = 100
    ) -> builtins.list[OperationRecord]:
        """Pending operations, oldest first: the dispatch queue."""
        table = self._table
        query = sa.select(table).where(table.c.status == OperationStatus.PENDING.value)
        if operation_type is not None:
            query = query.where(table.c.type == OperationType(operation_type).value)
        query = query.order_by(table.c.created_at, table.c.id).limit(limit)
        return self._records(query)

    def running(self) -> builtins.list[OperationRecord]:
        """Running operations in full, least recently reported first (tests and tools;
        the dispatcher and the orphan detector read less: :meth:`busy_workers`,
        :meth:`unreported_since`)."""
        table = self._table
        query = (
            sa.select(table)
            .where(table.c.status == OperationStatus.RUNNING.value)
            .order_by(table.c.last_reported_at, table.c.id)
        )
        return self._records(query)

    def busy_workers(self) -> set[str]:
        """Ids of the workers running an operation (the dispatcher's guard each round).

        One query returning only the worker ids (the status index finds the running
        rows): a round no longer loads every running operation in full.
        """
        with self._engine.connect() as conn:
            return set(conn.execute(self._statements.busy_workers).scalars())

    def unreported_since(self, cutoff: datetime.datetime) -> builtins.list[OperationRecord]:
        """Running operations last reported before ``cutoff`` (or never), least recently
        reported first: the orphan detector's candidates.

        Only those rows are read and built into records, however many operations run
        (the status index finds the running rows; the cutoff is applied in the query).
        """
        bound = {"k_cutoff": _aware("cutoff", cutoff)}
        with self._engine.connect() as conn:
            return [_record(r._mapping) for r in conn.execute(self._statements.unreported, bound)]

    # --- transitions ------------------------------------------------------------------

    def known_attempt(self, operation_id: str) -> AttemptState | None:
        """The operation's current attempt if the book holds it (no database read)."""
        return self._attempts.get(operation_id)

    def current_attempt(self, operation_id: str) -> AttemptState:
        """The operation's current attempt (number, status, worker); mostly from memory.

        Raises :class:`OperationNotFound`. The heartbeat path's fencing check.
        """
        state = self._attempts.lookup(operation_id, self._read_attempt)
        if state is None:
            raise OperationNotFound(operation_id)
        return state

    def _read_attempt(self, operation_id: str) -> AttemptState | None:
        with self._engine.connect() as conn:
            row = conn.execute(self._statements.attempt_of, {"k_id": operation_id}).first()
        if row is None:
            return None
        return AttemptState(
            operation_id=operation_id,
            attempt=int(row.attempt),
            status=OperationStatus(row.status),
            worker_id=row.worker_id,
        )

    def mark_running(
        self, operation_id: str, *, worker_id: str, now: datetime.datetime
    ) -> OperationRecord:
        """pending → running on ``worker_id`` as the next attempt (the dispatcher's claim).

        Stamps the report and progress times, and the attempt's deadline when the
        operation has a timeout: in the same transaction, right after the claim (which
        holds the write lock by then), so a claim is one transaction and, for an
        operation without a timeout, one statement.
        """
        now = _aware("now", now)
        return self._transition(
            operation_id,
            action="start",
            allowed=(OperationStatus.PENDING,),
            values=self._start_values(worker_id, now),
            then=self._with_deadline(now),
        )

    def _start_values(self, worker_id: str, now: datetime.datetime) -> dict[str, Any]:
        """What a claim sets: running on ``worker_id`` as the next attempt, from ``now``."""
        return {
            "status": OperationStatus.RUNNING.value,
            "worker_id": worker_id,
            "attempt": self._statements.next_attempt,
            "started_at": now,
            "last_reported_at": now,
            "progressed_at": now,
            "deadline_at": None,
            "error": None,
        }

    def _with_deadline(self, now: datetime.datetime) -> Callable[[Rows, RowValues], RowValues]:
        """A claim's second step, in its transaction: the attempt's deadline, if it has
        a timeout (the row as it then is).
        """

        def with_deadline(rows: Rows, row: RowValues) -> RowValues:
            if row["timeout_s"] is None:
                return row
            deadline = now + datetime.timedelta(seconds=row["timeout_s"])
            bound = {"k_id": row["id"], "v_deadline_at": deadline}
            updated = rows.first(self._statements.set_deadline, bound)
            assert updated is not None  # the row this transaction just claimed
            return updated

        return with_deadline

    def _claim_first(
        self,
        rows: Rows,
        operation_type: OperationType,
        worker_ids: Iterable[str],
        now: datetime.datetime,
        claimed: builtins.list[tuple[OperationRecord, str]],
    ) -> None:
        """In ``rows``' transaction: :meth:`_claim_oldest` for the first of ``worker_ids``
        that runs nothing; ``claimed`` then holds that (record, worker id), else nothing
        (it is cleared first: a transaction may run twice, see store_driver's fallback).
        """
        claimed.clear()
        for worker_id in worker_ids:
            taken = self._claim_oldest(rows, operation_type, worker_id, now)
            if taken is not None:
                claimed.append((_record(taken), worker_id))
                return

    def _claim_oldest(
        self,
        rows: Rows,
        operation_type: OperationType,
        worker_id: str,
        now: datetime.datetime,
    ) -> RowValues | None:
        """In ``rows``' transaction: claim the oldest pending operation of
        ``operation_type`` for ``worker_id`` (as :meth:`mark_running` does), unless the
        worker runs an operation already or none is pending; the claimed row.
        """
        if rows.first(self._statements.running_on, {"k_worker": worker_id}) is not None:
            return None
        oldest = rows.first(
            self._statements.oldest_pending, {"k_type": OperationType(operation_type).value}
        )
        if oldest is None:
            return None
        values = self._start_values(worker_id, now)
        statement = self._statements.transition(
            allowed=(OperationStatus.PENDING,), values=values, worker=False, attempt=False
        )
        assert statement is not None  # its values are plain or the shared expressions
        bound = self._statements.parameters(oldest["id"], values, worker_id=None, attempt=None)
        row = rows.first(statement, bound)
        return None if row is None else self._with_deadline(now)(rows, row)

    def update_progress(
        self,
        operation_id: str,
        *,
        now: datetime.datetime,
        progress: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
        attempt: int | None = None,
    ) -> OperationRecord:
        """Record a running operation's progress (None: only "still running") and stamp it.

        With ``worker_id`` (and ``attempt``), a report from any other worker (or
        attempt) is refused with :class:`StaleAttempt`: a worker that lost the
        operation (orphaned, re-dispatched) cannot overwrite it.
        """
        values: dict[str, Any] = {"last_reported_at": _aware("now", now)}
        if progress is not None:
            values["progress"] = _json("progress", dict(progress))
            values["progressed_at"] = now
        return self._transition(
            operation_id,
            action="report progress of",
            allowed=(OperationStatus.RUNNING,),
            values=values,
            worker_id=worker_id,
            attempt=attempt,
        )

    def stamp_many(self, stamps: Collection[ProgressStamp]) -> None:
        """Record many heartbeats in one transaction (the backend batches them).

        Like :meth:`update_progress` for each stamp, except that a stamp whose
        operation is no longer running on its worker and attempt is skipped silently
        (the news came too late), and progress that is not plain JSON (NaN) is dropped
        with a warning while the time is still recorded. One bad stamp never loses the
        others. ``progressed_at`` moves only with a stamp that says the progress changed.
        Series points are kept for operations running on the stamping worker.
        """
        table = self._table
        timed: list[dict[str, Any]] = []
        with_progress: list[dict[str, Any]] = []
        progressed: list[dict[str, Any]] = []
        for stamp in stamps:
            values = {
                "b_id": stamp.operation_id,
                "b_worker": stamp.worker_id,
                "b_attempt": stamp.attempt,
                "b_at": _aware("at", stamp.at),
            }
            if stamp.progress is not None:
                try:
                    values["b_progress"] = _json("progress", dict(stamp.progress))
                except ValueError as exc:
                    logger.warning(
                        "progress of operation %s not stored: %s", stamp.operation_id, exc
                    )
                else:
                    if stamp.progressed_at is None:
                        with_progress.append(values)
                    else:
                        values["b_progressed"] = _aware("progressed_at", stamp.progressed_at)
                        progressed.append(values)
                    continue
            timed.append(values)
        running = sa.update(table).where(
            table.c.id == sa.bindparam("b_id"),
            table.c.status == OperationStatus.RUNNING.value,
            table.c.worker_id == sa.bindparam("b_worker"),
            table.c.attempt == sa.bindparam("b_attempt"),
        )
        at = sa.bindparam("b_at", type_=table.c.last_reported_at.type)
        with self._engine.begin() as conn:
            if timed:
                conn.execute(running.values(last_reported_at=at), timed)
            if with_progress or progressed:
                progress = sa.bindparam("b_progress", type_=table.c.progress.type)
                if with_progress:
                    statement = running.values(last_reported_at=at, progress=progress)
                    conn.execute(statement, with_progress)
                if progressed:
                    moved = sa.bindparam("b_progressed", type_=table.c.progressed_at.type)
                    statement = running.values(
                        last_reported_at=at, progress=progress, progressed_at=moved
                    )
                    conn.execute(statement, progressed)
            plotted = [s for s in stamps if s.series]
            if plotted:
                owners = self._owners(conn, [s.operation_id for s in plotted], running_only=True)
                upsert_points(
                    ConnectionRows(conn),
                    self._upsert_series,
                    (
                        (s.operation_id, s.series)
                        for s in plotted
                        if s.series and owners.get(s.operation_id) == s.worker_id
                    ),
                )

    def finish(
        self,
        operation_id: str,
        *,
        status: OperationStatus,
        now: datetime.datetime,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        worker_id: str | None = None,
        attempt: int | None = None,
        series: Points | None = None,
    ) -> OperationRecord:
        """pending/running → completed, failed or cancelled, once.

        Finishing an operation that already finished raises :class:`InvalidTransition`
        (the first outcome stands). With ``worker_id`` and ``attempt`` (a worker's
        outcome), only that worker's attempt may finish it, and only while it is the
        latest: running, or queued again after it was lost but before the next attempt
        started (a late outcome). Otherwise :class:`StaleAttempt`, and nothing changes.

        ``series`` (the points ``worker_id`` reports) is written in the same
        transaction, like :meth:`record_series` does: whenever the operation was last
        given to ``worker_id``, even if the finish itself is refused (a run cancelled
        meanwhile still keeps its whole curve). One transaction per outcome instead of two.
        """
        return self._finish(
            operation_id,
            status=status,
            now=now,
            result=result,
            error=error,
            worker_id=worker_id,
            attempt=attempt,
            series=series,
        )

    def finish_and_claim(
        self,
        operation_id: str,
        *,
        status: OperationStatus,
        now: datetime.datetime,
        worker_id: str,
        attempt: int,
        next_type: OperationType | None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        series: Points | None = None,
    ) -> tuple[OperationRecord, OperationRecord | None]:
        """:meth:`finish` a worker's attempt and, in the same transaction, claim the
        oldest pending operation of ``next_type`` (None: nothing) for that worker (as
        :meth:`mark_running` does: running on it as its next attempt, deadline stamped).

        The finished record, and the claimed one (None when nothing of that type is
        pending, or the store has the worker running another operation). One
        transaction: the claim is never seen without the finish, and a failure
        anywhere leaves both undone. Refusals are :meth:`finish`'s.
        """
        now = _aware("now", now)
        claimed: builtins.list[tuple[OperationRecord, str]] = []

        def claim_next(rows: Rows, row: RowValues) -> RowValues:
            if next_type is not None:
                self._claim_first(rows, next_type, [worker_id], now, claimed)
            return row

        with self._attempts.lock:  # re-entrant: the book learns both under one hold
            record = self._finish(
                operation_id,
                status=status,
                now=now,
                result=result,
                error=error,
                worker_id=worker_id,
                attempt=attempt,
                series=series,
                then=claim_next,
            )
            if claimed:
                self._attempts.record(claimed[0][0].attempt_state())
        return record, claimed[0][0] if claimed else None

    def _finish(
        self,
        operation_id: str,
        *,
        status: OperationStatus,
        now: datetime.datetime,
        result: Mapping[str, Any] | None,
        error: str | None,
        worker_id: str | None,
        attempt: int | None,
        series: Points | None,
        then: Callable[[Rows, RowValues], RowValues] | None = None,
    ) -> OperationRecord:
        if not OperationStatus(status).finished:
            message = f"expected a final status (completed, failed, cancelled), got {status}"
            raise ValueError(message)
        if series and worker_id is None:
            message = "series points need the worker_id that reports them"
            raise ValueError(message)
        return self._transition(
            operation_id,
            action=f"mark {OperationStatus(status).value}",
            allowed=LIVE_STATUSES,
            values={
                "status": OperationStatus(status).value,
                "result": _json("result", None if result is None else dict(result)),
                "error": error,
                "finished_at": _aware("now", now),
                "last_reported_at": now,
                "deadline_at": None,
            },
            worker_id=worker_id,
            attempt=attempt,
            series=series or None,
            then=then,
        )

    def lose(
        self,
        operation_id: str,
        *,
        worker_id: str,
        attempt: int,
        now: datetime.datetime,
        reason: str,
        max_attempts: int,
        cutoff: datetime.datetime | None = None,
        cause: str = "lost",
    ) -> OperationRecord | None:
        """The running ``attempt`` on ``worker_id`` was lost with its worker: retry or fail.

        Fewer than ``max_attempts`` attempts lost (this one included): back to pending,
        to resume from the checkpoint as the next attempt (the worker is kept, so a
        late outcome of this attempt is still accepted until that one starts).
        Otherwise failed, with a reason naming the attempts and KTRDR_OPS_MAX_ATTEMPTS.

        With ``cutoff`` (the orphan detector), only if not reported since ``cutoff``;
        returns None when anything changed meanwhile (a report won, another attempt
        started), instead of raising. A retry begins a new trace, and the retry
        listeners hear of it with ``cause`` (a metrics label: orphaned, unreachable...).
        """
        now = _aware("now", now)
        table = self._table
        with self._engine.connect() as conn:
            lost_before = conn.execute(
                self._statements.lost_attempts_of, {"k_id": operation_id}
            ).scalar()
        if lost_before is None:
            if cutoff is not None:
                return None
            raise OperationNotFound(operation_id)
        verdict = lost_attempt(
            attempt=attempt, lost_before=int(lost_before), max_attempts=max_attempts, reason=reason
        )
        values: dict[str, Any] = {
            "lost_attempts": self._statements.one_more_lost,
            "error": verdict.error,
            "deadline_at": None,
        }
        if verdict.retry:
            values.update(status=OperationStatus.PENDING.value, resume=True, trace_parent=None)
        else:
            values.update(status=OperationStatus.FAILED.value, finished_at=now)
        extra = []
        if cutoff is not None:
            extra.append(table.c.last_reported_at < _aware("cutoff", cutoff))
        extra.append(table.c.lost_attempts == int(lost_before))
        record = self._apply(
            operation_id,
            action="retry",
            allowed=(OperationStatus.RUNNING,),
            values=values,
            worker_id=worker_id,
            attempt=attempt,
            extra=extra,
            quiet=cutoff is not None,
        )
        if record is not None and record.status is OperationStatus.PENDING:
            for listener in self._retry_listeners:
                listener(record, cause)
        return record

    def fail_running(
        self,
        operation_id: str,
        *,
        worker_id: str,
        attempt: int,
        now: datetime.datetime,
        error: str,
        progressed_before: datetime.datetime | None = None,
        deadline_before: datetime.datetime | None = None,
    ) -> OperationRecord | None:
        """Fail ``attempt`` running on ``worker_id`` (timed out, stalled); None if it moved on.

        ``progressed_before`` / ``deadline_before`` re-check, in the same update, that
        the progress still had not changed / the deadline had passed.
        """
        table = self._table
        extra = []
        if progressed_before is not None:
            extra.append(table.c.progressed_at < _aware("progressed_before", progressed_before))
        if deadline_before is not None:
            extra.append(table.c.deadline_at < _aware("deadline_before", deadline_before))
        return self._apply(
            operation_id,
            action="fail",
            allowed=(OperationStatus.RUNNING,),
            values={
                "status": OperationStatus.FAILED.value,
                "error": error,
                "finished_at": _aware("now", now),
                "deadline_at": None,
            },
            worker_id=worker_id,
            attempt=attempt,
            extra=extra,
            quiet=True,
        )

    def overdue(self, now: datetime.datetime) -> builtins.list[OperationRecord]:
        """Running operations whose attempt's deadline is before ``now``."""
        return self._running_before(self._table.c.deadline_at, _aware("now", now))

    def stalled(self, cutoff: datetime.datetime) -> builtins.list[OperationRecord]:
        """Running operations whose progress has not changed since before ``cutoff``."""
        return self._running_before(self._table.c.progressed_at, _aware("cutoff", cutoff))

    def _running_before(
        self, column: sa.Column[Any], moment: datetime.datetime
    ) -> builtins.list[OperationRecord]:
        table = self._table
        query = sa.select(table).where(
            table.c.status == OperationStatus.RUNNING.value, column < moment
        )
        return self._records(query)

    def _records(self, query: sa.Select[Any]) -> builtins.list[OperationRecord]:
        """The rows of ``query`` as records, on a connection of their own."""
        with self._engine.connect() as conn:
            return [_record(r._mapping) for r in conn.execute(query)]

    def requeue(self, operation_id: str, *, trace_parent: str | None = None) -> OperationRecord:
        """failed/cancelled → pending with ``resume=True``: run again from the checkpoint.

        The worker, result, error and finish time are cleared; the last progress stays
        so a client still sees how far it got. A new attempt is a new trace:
        ``trace_parent`` replaces the previous attempt's (None: the dispatch begins one).
        The count of lost attempts starts again (a resume by hand gets
        ``KTRDR_OPS_MAX_ATTEMPTS`` fresh attempts).
        """
        return self._transition(
            operation_id,
            action="resume",
            allowed=(OperationStatus.FAILED, OperationStatus.CANCELLED),
            values={
                "status": OperationStatus.PENDING.value,
                "resume": True,
                "worker_id": None,
                "result": None,
                "error": None,
                "started_at": None,
                "finished_at": None,
                "last_reported_at": None,
                "trace_parent": trace_parent,
                "lost_attempts": 0,
                "deadline_at": None,
                "progressed_at": None,
            },
        )

    def trace_parent(self, operation_id: str) -> str | None:
        """The ``traceparent`` the current attempt continues; raises :class:`OperationNotFound`."""
        table = self._table
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(table.c.trace_parent).where(table.c.id == operation_id)
            ).first()
        if row is None:
            raise OperationNotFound(operation_id)
        value: str | None = row.trace_parent
        return value

    def set_trace_parent(self, operation_id: str, trace_parent: str) -> bool:
        """Record the trace of an attempt begun without one (by its dispatch).

        Only while the operation has none, so a trace once shown is never replaced
        within an attempt; True when it was recorded.
        """
        table = self._table
        statement = (
            sa.update(table)
            .where(table.c.id == operation_id, table.c.trace_parent.is_(None))
            .values(trace_parent=trace_parent)
        )
        with self._engine.begin() as conn:
            return int(conn.execute(statement).rowcount) == 1

    def release(self, operation_id: str, *, worker_id: str, attempt: int) -> OperationRecord:
        """running ``attempt`` on ``worker_id`` → pending again: the worker refused it.

        The dispatcher marks an operation running before it calls the worker; when the
        worker answers that it cannot take it now (busy, stopping) this puts the
        operation back in the queue, in its old place (creation order), with its
        ``resume`` flag kept and the attempt number given back (that attempt never ran).
        """
        return self._transition(
            operation_id,
            action="release",
            allowed=(OperationStatus.RUNNING,),
            values={
                "status": OperationStatus.PENDING.value,
                "worker_id": None,
                "attempt": self._statements.previous_attempt,
                "started_at": None,
                "last_reported_at": None,
                "progressed_at": None,
                "deadline_at": None,
            },
            worker_id=worker_id,
            attempt=attempt,
        )

    def delete_finished_batch(self, cutoff: datetime.datetime, *, limit: int) -> int:
        """Delete at most ``limit`` operations finished before ``cutoff`` (oldest first)
        and their series points, in one short transaction; how many were deleted.

        Retention calls it until it deletes fewer than ``limit``, so no other writer
        waits for more than one batch.
        """
        if limit < 1:
            message = f"expected a batch of at least 1, got {limit}"
            raise ValueError(message)
        table = self._table
        expired = (
            # "Not live" is "finished" (a status is one or the other), written so that
            # no equality on status tempts a planner without statistics (SQLite never
            # gathers them by itself) into the status index: that plan reads every
            # finished row of the table for each batch, and the delete holds the write
            # lock meanwhile. This way the batch is read through ix_operations_finished
            # and deleted by primary key.
            table.c.status.not_in([s.value for s in LIVE_STATUSES]),
            table.c.finished_at < _aware("cutoff", cutoff),
        )
        batch = sa.select(table.c.id).where(*expired).order_by(table.c.finished_at).limit(limit)
        with self._engine.begin() as conn:
            ids = list(conn.execute(batch).scalars())
            if not ids:
                return 0
            delete_series(conn, self._series, sa.select(table.c.id).where(table.c.id.in_(ids)))
            deleted = conn.execute(sa.delete(table).where(table.c.id.in_(ids), *expired))
            return int(deleted.rowcount)

    def delete_finished_before(self, cutoff: datetime.datetime, *, batch_size: int = 1000) -> int:
        """Delete every operation finished before ``cutoff``, in batches; the count.

        Each batch is its own transaction (:meth:`delete_finished_batch`).
        """
        total = 0
        while True:
            deleted = self.delete_finished_batch(cutoff, limit=batch_size)
            total += deleted
            if deleted < batch_size:
                return total

    # --- series -----------------------------------------------------------------------

    def record_series(self, operation_id: str, *, worker_id: str, points: Points) -> bool:
        """Store points ``worker_id`` reports for ``operation_id``, whatever its status.

        Only the worker the operation was last given to may add points (a report of a
        cancelled run still completes its curve); False when it is not that worker's
        (or no longer exists) and nothing was written.
        """
        with self._engine.begin() as conn:
            owners = self._owners(conn, [operation_id], running_only=False)
            if owners.get(operation_id) != worker_id:
                return False
            upsert_points(ConnectionRows(conn), self._upsert_series, [(operation_id, points)])
        return True

    def series(self, operation_id: str) -> SeriesRecord:
        """The operation's stored points; raises :class:`OperationNotFound`."""
        table = self._table
        with self._engine.connect() as conn:
            kind = conn.execute(sa.select(table.c.type).where(table.c.id == operation_id)).first()
            if kind is None:
                raise OperationNotFound(operation_id)
            points = read_series(conn, self._series, operation_id)
        return SeriesRecord(type=OperationType(kind.type), points=points)

    def _owners(
        self, conn: Connection, operation_ids: Collection[str], *, running_only: bool
    ) -> dict[str, str | None]:
        """The worker each operation was given to (running ones only, if asked)."""
        table = self._table
        query = sa.select(table.c.id, table.c.worker_id).where(table.c.id.in_(operation_ids))
        if running_only:
            query = query.where(table.c.status == OperationStatus.RUNNING.value)
        return {row.id: row.worker_id for row in conn.execute(query)}

    # --- helpers ----------------------------------------------------------------------

    def _count(self, conn: Connection, statuses: Collection[OperationStatus]) -> int:
        table = self._table
        query = (
            sa.select(sa.func.count())
            .select_from(table)
            .where(table.c.status.in_([s.value for s in statuses]))
        )
        return int(conn.execute(query).scalar_one())

    def _run(self, work: Callable[[Rows], T], *, driver: bool = True) -> T:
        """``work`` in one transaction: on SQLite's driver path when it can
        (:mod:`ktrdr.api.store_driver`), else through SQLAlchemy.

        ``work`` may be started twice (the driver path's attempt rolled back, then
        SQLAlchemy's), so it must only read and write the database.
        """
        if driver and self._driver is not None:
            try:
                return self._driver.run(work)
            except Unavailable:
                pass
        with self._engine.begin() as conn:
            return work(ConnectionRows(conn))

    def _transition(
        self,
        operation_id: str,
        *,
        action: str,
        allowed: Collection[OperationStatus],
        values: Mapping[str, Any],
        worker_id: str | None = None,
        attempt: int | None = None,
        series: Points | None = None,
        then: Callable[[Rows, RowValues], RowValues] | None = None,
    ) -> OperationRecord:
        """:meth:`_apply` that raises when nothing matched."""
        record = self._apply(
            operation_id,
            action=action,
            allowed=allowed,
            values=values,
            worker_id=worker_id,
            attempt=attempt,
            series=series,
            then=then,
        )
        assert record is not None  # not quiet: raised instead
        return record

    def _update(
        self,
        operation_id: str,
        allowed: Collection[OperationStatus],
        values: Mapping[str, Any],
        worker_id: str | None,
        attempt: int | None,
        extra: Iterable[Any],
    ) -> sa.Update:
        """A one-off conditional update (extra conditions carry their own values)."""
        table = self._table
        conditions = [
            table.c.id == operation_id,
            table.c.status.in_([s.value for s in allowed]),
            *extra,
        ]
        if worker_id is not None:
            conditions.append(table.c.worker_id == worker_id)
        if attempt is not None:
            conditions.append(table.c.attempt == attempt)
        return sa.update(table).where(*conditions).values(values).returning(*table.c)

    def _apply(
        self,
        operation_id: str,
        *,
        action: str,
        allowed: Collection[OperationStatus],
        values: Mapping[str, Any],
        worker_id: str | None = None,
        attempt: int | None = None,
        extra: Iterable[Any] = (),
        quiet: bool = False,
        series: Points | None = None,
        then: Callable[[Rows, RowValues], RowValues] | None = None,
    ) -> OperationRecord | None:
        """One conditional update, serialised with every other transition of this store.

        Conditions: the status is one of ``allowed``, and with ``worker_id`` /
        ``attempt`` the operation's worker / attempt is that one, plus ``extra``. The
        book of current attempts learns the outcome before the lock is released. When
        nothing matched: None with ``quiet``, else :class:`OperationNotFound`,
        :class:`InvalidTransition` (status) or :class:`StaleAttempt` (worker, attempt).
        ``series`` (points from ``worker_id``) is written in the same transaction when
        the operation was last given to ``worker_id``, whether or not the update matched.
        ``then`` runs in the same transaction on the updated row when one matched, and
        returns the row as it then is.
        """
        extra = tuple(extra)
        prebuilt = None
        if not extra:
            prebuilt = self._statements.transition(
                allowed=allowed,
                values=values,
                worker=worker_id is not None,
                attempt=attempt is not None,
            )
        if prebuilt is not None:
            statement: sa.Update = prebuilt
            bound: dict[str, Any] | None = self._statements.parameters(
                operation_id, values, worker_id=worker_id, attempt=attempt
            )
        else:
            statement = self._update(operation_id, allowed, values, worker_id, attempt, extra)
            bound = None

        def update(
            rows: Rows,
        ) -> tuple[RowValues | None, RowValues | None]:
            row = rows.first(statement, bound)
            if row is not None and then is not None:
                row = then(rows, row)
            current = None
            if row is None:
                current = rows.first(self._statements.attempt_of, {"k_id": operation_id})
            if series and worker_id is not None:
                owner = row if row is not None else current
                if owner is not None and owner["worker_id"] == worker_id:
                    upsert_points(rows, self._upsert_series, [(operation_id, series)])
            return row, current

        with self._attempts.lock:
            # One-off statements (extra conditions): SQLAlchemy only.
            row, current = self._run(update, driver=prebuilt is not None)
            if row is not None:
                record = _record(row)
                self._attempts.record(record.attempt_state())
                return self._finished(record) if record.status.finished else record
            if current is None:
                self._attempts.forget(operation_id)
            else:
                self._attempts.record(
                    AttemptState(
                        operation_id=operation_id,
                        attempt=int(current["attempt"]),
                        status=OperationStatus(current["status"]),
                        worker_id=current["worker_id"],
                    )
                )
        if quiet:
            return None
        if current is None:
            raise OperationNotFound(operation_id)
        status = OperationStatus(current["status"])
        if status not in allowed or (worker_id is None and attempt is None):
            raise InvalidTransition(operation_id, current=status, action=action, allowed=allowed)
        state = AttemptState(
            operation_id=operation_id,
            attempt=int(current["attempt"]),
            status=status,
            worker_id=current["worker_id"],
        )
        raise stale_attempt(state, worker_id=worker_id or "(none)", attempt=attempt)


def _timeout(value: float | None) -> float | None:
    """A positive, finite number of seconds, or None."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        message = f"timeout_s must be a positive number of seconds, got {value!r}"
        raise ValueError(message)
    return float(value)


def _record(row: RowValues) -> OperationRecord:
    return OperationRecord(
        id=row["id"],
        type=OperationType(row["type"]),
        status=OperationStatus(row["status"]),
        parameters=row["parameters"],
        progress=row["progress"],
        result=row["result"],
        error=row["error"],
        worker_id=row["worker_id"],
        resume=bool(row["resume"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        last_reported_at=row["last_reported_at"],
        trace_parent=row["trace_parent"],
        attempt=int(row["attempt"]),
        lost_attempts=int(row["lost_attempts"]),
        timeout_s=row["timeout_s"],
        deadline_at=row["deadline_at"],
        progressed_at=row["progressed_at"],
    )
