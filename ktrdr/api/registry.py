"""The backend's worker registry: who is registered, their status and heartbeats.

In memory by design: a backend restart forgets every worker (and every credential),
and workers re-register when their next heartbeat gets 404. All methods are
synchronous and called from the event loop only, so no lock is needed. Time is passed
in (``now``), never read here, so tests drive the registry with any clock.

Each registration issues a fresh random credential bound to that worker id and that
registration; the registry keeps only its SHA-256 digest (nothing that could be sent
back), so a record's repr or a memory dump gives no usable credential. A credential
is looked up by digest, and a digest compared in constant time.

Every registration, heartbeat and status change costs the same at 10 or 10,000
workers: the registry keeps its indexes (id order, fingerprints per type for drift,
idle workers per type, counts, silence order per heartbeat interval) up to date on
each change instead of recomputing them over the fleet. Only listing everything is
proportional to the fleet (and the API bounds how often that may happen).
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import hmac
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import attrs

from ktrdr.errors import UnknownWorker, WorkerIdConflict
from ktrdr.protocol import (
    HeartbeatRequest,
    OperationType,
    Progress,
    RegisterRequest,
    WorkerStatus,
    WorkerView,
)


@attrs.frozen(kw_only=True)
class WorkerRecord:
    """What the backend knows about one worker."""

    worker_id: str
    worker_type: OperationType
    endpoint_url: str
    capabilities: Mapping[str, Any]
    heartbeat_interval: datetime.timedelta
    config_fingerprint: str
    status: WorkerStatus
    current_operation_id: str | None
    #: Progress of the current operation, as last reported (None when idle).
    progress: Progress | None
    registered_at: datetime.datetime
    last_heartbeat_at: datetime.datetime
    #: SHA-256 of the credential issued by the registration that made this record.
    credential_digest: bytes = attrs.field(default=b"", repr=False)

    def holds(self, credential: str) -> bool:
        """True when ``credential`` is this registration's (constant-time compare)."""
        return hmac.compare_digest(credential_digest(credential), self.credential_digest)

    def silence(self, now: datetime.datetime) -> datetime.timedelta:
        """Time since the last sign of life."""
        return now - self.last_heartbeat_at

    def view(self, *, drift: bool = False) -> WorkerView:
        """The wire form (``GET /api/v1/workers``).

        Built without re-validation: every value came from a validated request or
        from the backend's own clock (heartbeats are the hot path).
        """
        return WorkerView.model_construct(
            worker_id=self.worker_id,
            worker_type=self.worker_type,
            endpoint_url=self.endpoint_url,
            status=self.status,
            current_operation_id=self.current_operation_id,
            last_heartbeat_at=self.last_heartbeat_at,
            registered_at=self.registered_at,
            capabilities=dict(self.capabilities),
            config_fingerprint=self.config_fingerprint,
            heartbeat_interval_s=self.heartbeat_interval.total_seconds(),
            fingerprint_drift=drift,
        )


#: Random bytes in a credential (256 bits, URL-safe base64: 43 characters).
CREDENTIAL_BYTES = 32


def credential_digest(credential: str) -> bytes:
    """The digest the registry keeps instead of a credential."""
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).digest()


@attrs.frozen(kw_only=True)
class Registration:
    """The outcome of :meth:`WorkerRegistry.register`."""

    record: WorkerRecord
    #: True for a worker id the registry did not hold.
    created: bool
    #: The new credential, returned once to the worker and kept nowhere.
    credential: str = attrs.field(repr=False)


def drifting_workers(records: Iterable[WorkerRecord]) -> frozenset[str]:
    """Ids of live workers whose type also has a live worker with another fingerprint.

    Every worker of a mixed type is flagged (there is no "right" configuration to
    compare with, and a tie would make a majority rule arbitrary). Unavailable workers
    are left out on both sides: a dead process runs no configuration.
    """
    by_type: dict[OperationType, list[WorkerRecord]] = defaultdict(list)
    for record in records:
        if record.status is not WorkerStatus.UNAVAILABLE:
            by_type[record.worker_type].append(record)
    flagged: set[str] = set()
    for group in by_type.values():
        if len({r.config_fingerprint for r in group}) > 1:
            flagged.update(r.worker_id for r in group)
    return frozenset(flagged)


class RegistryMeter(Protocol):
    """Told how many records each registry operation examined (tests count the work)."""

    def __call__(self, records: int) -> None:
        """``records`` records were looked at or re-indexed."""
        ...


def _uncounted(records: int) -> None:
    """The default meter: counts nothing."""


@attrs.define
class _Lane:
    """The workers of one heartbeat interval, each list ordered by last heartbeat."""

    #: Not unavailable, oldest heartbeat first.
    alive: dict[str, None] = attrs.Factory(dict)
    #: Unavailable, oldest heartbeat first.
    dead: dict[str, None] = attrs.Factory(dict)


class WorkerRegistry:
    """Registered workers by id, with the indexes that keep every request O(1).

    Besides the records it keeps, updated on every change: the ids in order (for
    listings and pages), per type the count of each configuration fingerprint among
    live workers (drift), per type the idle workers in the order they became idle
    (dispatch), counts by type and status, and per heartbeat interval the workers in
    the order of their last heartbeat (liveness sweeps walk only the silent end).
    ``meter`` is told how many records each call examined.
    """

    def __init__(self, *, meter: RegistryMeter = _uncounted) -> None:
        self._meter = meter
        self._workers: dict[str, WorkerRecord] = {}
        #: Credential digest → worker id, for requests that name no worker (reports).
        self._holders: dict[bytes, str] = {}
        #: Every worker id, sorted.
        self._order: list[str] = []
        #: Per type: fingerprint → how many live (not unavailable) workers run it.
        self._fingerprints: dict[OperationType, Counter[str]] = defaultdict(Counter)
        #: Per type: idle worker ids, longest idle first.
        self._idle: dict[OperationType, dict[str, None]] = defaultdict(dict)
        #: Workers by (type, status).
        self._counts: Counter[tuple[OperationType, WorkerStatus]] = Counter()
        #: Per heartbeat interval: the workers ordered by last heartbeat.
        self._lanes: dict[datetime.timedelta, _Lane] = defaultdict(_Lane)

    def __len__(self) -> int:
        return len(self._workers)

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._workers

    # --- changes ----------------------------------------------------------------------

    def register(self, request: RegisterRequest, *, now: datetime.datetime) -> Registration:
        """Add or replace ``request.worker_id`` and issue it a new credential.

        Idempotent per id: registering again (a restarted worker, a retried request,
        a backend that forgot it) replaces the record, keeps ``registered_at`` and
        makes the previous credential worthless. Raises :class:`WorkerIdConflict`
        when a live (not unavailable) worker holds the id at another endpoint.
        """
        previous = self._workers.get(request.worker_id)
        if (
            previous is not None
            and previous.status is not WorkerStatus.UNAVAILABLE
            and previous.endpoint_url != request.endpoint_url
        ):
            raise WorkerIdConflict(request.worker_id, endpoint_url=previous.endpoint_url)
        credential = secrets.token_urlsafe(CREDENTIAL_BYTES)
        digest = credential_digest(credential)
        status = WorkerStatus.BUSY if request.current_operation_id else WorkerStatus.IDLE
        record = WorkerRecord(
            worker_id=request.worker_id,
            worker_type=request.worker_type,
            endpoint_url=request.endpoint_url,
            capabilities=dict(request.capabilities),
            heartbeat_interval=datetime.timedelta(seconds=request.heartbeat_interval_s),
            config_fingerprint=request.config_fingerprint,
            status=status,
            current_operation_id=request.current_operation_id,
            progress=None,
            registered_at=previous.registered_at if previous is not None else now,
            last_heartbeat_at=now,
            credential_digest=digest,
        )
        if previous is not None:
            self._holders.pop(previous.credential_digest, None)
        self._put(previous, record)
        self._holders[digest] = request.worker_id
        return Registration(record=record, created=previous is None, credential=credential)

    def heartbeat(
        self, worker_id: str, request: HeartbeatRequest, *, now: datetime.datetime
    ) -> WorkerRecord:
        """Record a heartbeat; an unavailable worker becomes available again."""
        previous = self.get(worker_id)
        record = attrs.evolve(
            previous,
            status=request.status,
            current_operation_id=request.current_operation_id,
            progress=request.progress if request.current_operation_id else None,
            last_heartbeat_at=now,
        )
        self._put(previous, record)
        return record

    def assign(self, worker_id: str, operation_id: str) -> None:
        """The dispatcher gave ``operation_id`` to this worker: busy with it from now.

        Saves waiting for the worker's next heartbeat to say so. A no-op for an id that
        is no longer registered, and for a worker that turned unavailable or stopping
        while the start was on its way: its own heartbeat says what it does, and a
        silent worker must stay where the liveness sweep expects it.
        """
        record = self._workers.get(worker_id)
        if record is not None and record.status in (WorkerStatus.IDLE, WorkerStatus.BUSY):
            self._put(
                record,
                attrs.evolve(
                    record,
                    status=WorkerStatus.BUSY,
                    current_operation_id=operation_id,
                    progress=None,
                ),
            )

    def operation_ended(self, worker_id: str, operation_id: str) -> bool:
        """The worker reported ``operation_id`` finished: busy → idle, if that was its work.

        Lets the dispatcher hand it the next operation without waiting for a heartbeat.
        A worker that is stopping or unavailable stays so. Returns True when the record
        changed to idle.
        """
        record = self._workers.get(worker_id)
        if (
            record is None
            or record.status is not WorkerStatus.BUSY
            or record.current_operation_id != operation_id
        ):
            return False
        idle = attrs.evolve(
            record, status=WorkerStatus.IDLE, current_operation_id=None, progress=None
        )
        self._put(record, idle)
        return True

    def unregister(self, worker_id: str) -> WorkerRecord:
        """Remove a worker (it is shutting down); raises ``UnknownWorker``."""
        record = self._workers.get(worker_id)
        if record is None:
            raise UnknownWorker(worker_id)
        self._drop(record)
        return record

    def mark_unavailable(self, worker_ids: Iterable[str]) -> None:
        """Set ``unavailable`` on these workers (those still registered)."""
        for worker_id in worker_ids:
            record = self._workers.get(worker_id)
            if record is not None:
                self._put(record, attrs.evolve(record, status=WorkerStatus.UNAVAILABLE))

    def remove(self, worker_ids: Iterable[str]) -> None:
        """Forget these workers (silent for longer than the removal threshold)."""
        for worker_id in worker_ids:
            record = self._workers.get(worker_id)
            if record is not None:
                self._drop(record)

    # --- reads ------------------------------------------------------------------------

    def holder(self, credential: str) -> WorkerRecord | None:
        """The worker whose current credential is ``credential``, or None."""
        worker_id = self._holders.get(credential_digest(credential))
        return self._workers.get(worker_id) if worker_id is not None else None

    def get(self, worker_id: str) -> WorkerRecord:
        """The record of ``worker_id``; raises ``UnknownWorker``."""
        record = self._workers.get(worker_id)
        if record is None:
            raise UnknownWorker(worker_id)
        return record

    def records(self) -> list[WorkerRecord]:
        """Every record, ordered by worker id (O(fleet): listings and scrapes only)."""
        workers = self._workers
        self._meter(len(workers))
        return [workers[worker_id] for worker_id in self._order]

    def page(
        self,
        *,
        after: str | None = None,
        limit: int | None = None,
        worker_type: OperationType | None = None,
        status: WorkerStatus | None = None,
    ) -> tuple[list[WorkerRecord], bool]:
        """Records after the id ``after``, by id, matching the filters; and whether more match.

        At most ``limit`` records (None: all). Walks the ids from ``after`` and stops
        once the page is full and one more match is seen.
        """
        workers = self._workers
        order = self._order
        index = 0 if after is None else bisect.bisect_right(order, after)
        found: list[WorkerRecord] = []
        visited = 0
        more = False
        for position in range(index, len(order)):
            record = workers[order[position]]
            visited += 1
            if worker_type is not None and record.worker_type is not worker_type:
                continue
            if status is not None and record.status is not status:
                continue
            if limit is not None and len(found) >= limit:
                more = True
                break
            found.append(record)
        self._meter(visited)
        return found, more

    def count(
        self, *, worker_type: OperationType | None = None, status: WorkerStatus | None = None
    ) -> int:
        """How many workers match the filters (from the counts kept, not a scan)."""
        return sum(
            n
            for (kind, state), n in self._counts.items()
            if (worker_type is None or kind is worker_type) and (status is None or state is status)
        )

    def counts(self) -> dict[tuple[OperationType, WorkerStatus], int]:
        """Workers by (type, status), only the non-zero counts."""
        return {key: n for key, n in self._counts.items() if n}

    def drifting(self, record: WorkerRecord) -> bool:
        """True when ``record`` is live and live workers of its type run several configurations.

        The same rule as :func:`drifting_workers`, answered from the fingerprint counts
        kept per type instead of a pass over the fleet.
        """
        self._meter(1)
        return (
            record.status is not WorkerStatus.UNAVAILABLE
            and len(self._fingerprints.get(record.worker_type, ())) > 1
        )

    def drifting_types(self) -> frozenset[OperationType]:
        """Types whose live workers run more than one configuration."""
        return frozenset(kind for kind, seen in self._fingerprints.items() if len(seen) > 1)

    def idle(self, worker_type: OperationType) -> Iterator[WorkerRecord]:
        """Idle workers of ``worker_type``, longest idle first (lazily: take what you need).

        Do not change the registry while iterating.
        """
        workers = self._workers
        for worker_id in self._idle.get(worker_type, {}):
            self._meter(1)
            yield workers[worker_id]

    def idle_types(self) -> list[OperationType]:
        """Types that have at least one idle worker."""
        return [kind for kind, ids in self._idle.items() if ids]

    def silent_first(
        self,
    ) -> Iterator[tuple[datetime.timedelta, Iterator[WorkerRecord], Iterator[WorkerRecord]]]:
        """Per heartbeat interval: (interval, live workers, unavailable workers), each
        lazily in the order of their last heartbeat, the most silent first.

        A liveness sweep walks each from the front and stops at the first worker that
        is not due, so its cost is the number of workers that change, not the fleet.
        Do not change the registry while iterating.
        """
        for interval, lane in self._lanes.items():
            yield interval, self._walk(lane.alive), self._walk(lane.dead)

    def _walk(self, ids: dict[str, None]) -> Iterator[WorkerRecord]:
        workers = self._workers
        for worker_id in ids:
            self._meter(1)
            yield workers[worker_id]

    # --- indexes ----------------------------------------------------------------------

    def _put(self, previous: WorkerRecord | None, record: WorkerRecord) -> None:
        """Store ``record`` in place of ``previous`` and update only the indexes that moved."""
        worker_id = record.worker_id
        self._workers[worker_id] = record
        self._meter(1)
        if previous is None:
            bisect.insort(self._order, worker_id)
        else:
            self._unindex(previous, record)
        self._index(previous, record)

    def _drop(self, record: WorkerRecord) -> None:
        worker_id = record.worker_id
        del self._workers[worker_id]
        self._holders.pop(record.credential_digest, None)
        order = self._order
        del order[bisect.bisect_left(order, worker_id)]
        self._meter(1)
        self._unindex(record, None)

    def _unindex(self, old: WorkerRecord, new: WorkerRecord | None) -> None:
        """Remove ``old``'s entries that ``new`` does not share."""
        worker_id = old.worker_id
        kind = old.worker_type
        self._counts[(kind, old.status)] -= 1
        contributed = _live_fingerprint(old)
        if contributed is not None and contributed != _live_fingerprint(new):
            seen = self._fingerprints[kind]
            seen[old.config_fingerprint] -= 1
            if seen[old.config_fingerprint] <= 0:
                del seen[old.config_fingerprint]
        if old.status is WorkerStatus.IDLE and _idle_key(old) != _idle_key(new):
            self._idle[kind].pop(worker_id, None)
        if _lane_key(old) != _lane_key(new):
            lane = self._lanes[old.heartbeat_interval]
            queue = lane.dead if old.status is WorkerStatus.UNAVAILABLE else lane.alive
            queue.pop(worker_id, None)

    def _index(self, old: WorkerRecord | None, new: WorkerRecord) -> None:
        """Add ``new``'s entries that ``old`` did not have (at the end of each order)."""
        worker_id = new.worker_id
        kind = new.worker_type
        self._counts[(kind, new.status)] += 1
        contributes = _live_fingerprint(new)
        if contributes is not None and contributes != _live_fingerprint(old):
            self._fingerprints[kind][new.config_fingerprint] += 1
        if new.status is WorkerStatus.IDLE and _idle_key(new) != _idle_key(old):
            self._idle[kind][worker_id] = None
        if _lane_key(new) != _lane_key(old):
            lane = self._lanes[new.heartbeat_interval]
            (lane.dead if new.status is WorkerStatus.UNAVAILABLE else lane.alive)[worker_id] = None


def _live_fingerprint(record: WorkerRecord | None) -> tuple[OperationType, str] | None:
    """What a record adds to the drift counts (nothing when unavailable)."""
    if record is None or record.status is WorkerStatus.UNAVAILABLE:
        return None
    return record.worker_type, record.config_fingerprint


def _idle_key(record: WorkerRecord | None) -> OperationType | None:
    """The idle index a record sits in (None: none)."""
    if record is None or record.status is not WorkerStatus.IDLE:
        return None
    return record.worker_type


def _lane_key(
    record: WorkerRecord | None,
) -> tuple[datetime.timedelta, bool, datetime.datetime] | None:
    """Where a record sits in the silence order: moves with every heartbeat."""
    if record is None:
        return None
    dead = record.status is WorkerStatus.UNAVAILABLE
    return record.heartbeat_interval, dead, record.last_heartbeat_at


__all__ = [
    "CREDENTIAL_BYTES",
    "Registration",
    "RegistryMeter",
    "UnknownWorker",
    "WorkerRecord",
    "WorkerRegistry",
    "credential_digest",
    "drifting_workers",
]
