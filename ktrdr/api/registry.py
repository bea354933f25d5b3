"""The backend's worker registry: who is registered, their status and heartbeats.

In memory by design: a backend restart forgets every worker (and every credential),
and workers re-register when their next heartbeat gets 404. All methods are
synchronous and called from the event loop only, so no lock is needed. Time is passed
in (``now``), never read here, so tests drive the registry with any clock.

Each registration issues a fresh random credential bound to that worker id and that
registration; the registry keeps only its SHA-256 digest (nothing that could be sent
back), so a record's repr or a memory dump gives no usable credential. A credential
is looked up by digest, and a digest compared in constant time.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

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


class WorkerRegistry:
    """Registered workers by id."""

    def __init__(self) -> None:
        self._workers: dict[str, WorkerRecord] = {}
        #: Credential digest → worker id, for requests that name no worker (reports).
        self._holders: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._workers

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
        self._workers[request.worker_id] = record
        self._holders[digest] = request.worker_id
        return Registration(record=record, created=previous is None, credential=credential)

    def holder(self, credential: str) -> WorkerRecord | None:
        """The worker whose current credential is ``credential``, or None."""
        worker_id = self._holders.get(credential_digest(credential))
        return self._workers.get(worker_id) if worker_id is not None else None

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
        self._workers[worker_id] = record
        return record

    def assign(self, worker_id: str, operation_id: str) -> None:
        """The dispatcher gave ``operation_id`` to this worker: busy with it from now.

        Saves waiting for the worker's next heartbeat to say so (a no-op for an id
        that is no longer registered).
        """
        record = self._workers.get(worker_id)
        if record is not None:
            self._workers[worker_id] = attrs.evolve(
                record,
                status=WorkerStatus.BUSY,
                current_operation_id=operation_id,
                progress=None,
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
        self._workers[worker_id] = attrs.evolve(
            record, status=WorkerStatus.IDLE, current_operation_id=None, progress=None
        )
        return True

    def unregister(self, worker_id: str) -> WorkerRecord:
        """Remove a worker (it is shutting down); raises ``UnknownWorker``."""
        record = self._workers.pop(worker_id, None)
        if record is None:
            raise UnknownWorker(worker_id)
        self._holders.pop(record.credential_digest, None)
        return record

    def get(self, worker_id: str) -> WorkerRecord:
        """The record of ``worker_id``; raises ``UnknownWorker``."""
        record = self._workers.get(worker_id)
        if record is None:
            raise UnknownWorker(worker_id)
        return record

    def records(self) -> list[WorkerRecord]:
        """Every record, ordered by worker id."""
        return [self._workers[key] for key in sorted(self._workers)]

    def mark_unavailable(self, worker_ids: Iterable[str]) -> None:
        """Set ``unavailable`` on these workers (those still registered)."""
        for worker_id in worker_ids:
            record = self._workers.get(worker_id)
            if record is not None:
                self._workers[worker_id] = attrs.evolve(record, status=WorkerStatus.UNAVAILABLE)

    def remove(self, worker_ids: Iterable[str]) -> None:
        """Forget these workers (silent for longer than the removal threshold)."""
        for worker_id in worker_ids:
            record = self._workers.pop(worker_id, None)
            if record is not None:
                self._holders.pop(record.credential_digest, None)


__all__ = [
    "CREDENTIAL_BYTES",
    "Registration",
    "UnknownWorker",
    "WorkerRecord",
    "WorkerRegistry",
    "credential_digest",
    "drifting_workers",
]
