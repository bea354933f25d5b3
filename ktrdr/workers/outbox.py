"""The outbox: a worker's operation outcomes, kept on its own disk until the backend has them.

Why: an outcome (a result, a failure, or the end of a cancel or a shutdown with its
checkpoint) is the one thing a worker cannot cheaply compute again. The worker writes
it here *before* it reports it and removes it only once the backend acknowledged it,
so a backend (or database) outage of any length, or a restart of the worker itself,
loses no outcome: the entry is still on disk and is delivered later
(``ktrdr.workers.delivery`` does the sending).

Layout: ``<KTRDR_CHECKPOINT_DIR>/.outbox/<worker id>/<operation id>.json``, one small
JSON file per undelivered outcome. It lives beside the checkpoints because an outcome
is kept together with its operation's checkpoint, on the same (persistent) volume; the
worker id keeps workers that share a checkpoint directory out of each other's outbox
(the backend takes an outcome only from the worker that ran the operation). A dot
directory cannot collide with an operation's checkpoint directory (ids never start
with a dot).

Writes are atomic and durable: a temporary file in the same directory, fsync, rename
over the entry, fsync of the directory. A crash or a full disk leaves either no entry
or the whole entry, never half of one (and no temporary file behind). The report body
is stored exactly as the worker sends it, so whatever fields the protocol carries
travel through the outbox unchanged. Entries that cannot be read back (damaged by a
disk fault, edited by hand, written by an incompatible version) are moved aside to
``corrupt/`` with a reason naming the file, never sent and never fatal.

Blocking file I/O only (callers use a thread); nothing here knows HTTP or the backend.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ktrdr.protocol import MAX_BODY_BYTES
from ktrdr.vocabulary import id_problem

__all__ = [
    "CORRUPT_FOLDER",
    "OUTBOX_FOLDER",
    "REJECTED_FOLDER",
    "Outbox",
    "OutboxEntry",
    "OutboxScan",
    "SetAside",
]

#: The outbox's directory under ``KTRDR_CHECKPOINT_DIR`` (one subdirectory per worker id).
OUTBOX_FOLDER = ".outbox"
#: Where entries that cannot be read back are moved (inside the worker's outbox).
CORRUPT_FOLDER = "corrupt"
#: Where entries the backend refused for good (not a 409) are moved, for an operator.
REJECTED_FOLDER = "rejected"
_FORMAT = "ktrdr-outcome"
_VERSION = 1
_SUFFIX = ".json"
_TEMP_PREFIX = ".outcome-"
#: An entry larger than this cannot be a report (a report body is at most 1 MiB).
_MAX_ENTRY_BYTES = 2 * MAX_BODY_BYTES


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@attrs.frozen(kw_only=True)
class OutboxEntry:
    """One undelivered outcome: the report body as it is sent, and when it was written."""

    operation_id: str
    #: The report body (plain JSON), exactly as the worker sends it.
    report: Mapping[str, Any]
    written_at: datetime.datetime
    #: The entry's file; None when the disk refused it and it lives in memory only.
    path: Path | None
    #: Tells this entry from a newer one of the same operation (the file's owner).
    token: int = attrs.field(default=0, eq=False)

    @property
    def status(self) -> str | None:
        """The outcome's final status (``completed``, ``failed``, ``cancelled``)."""
        status = self.report.get("status")
        return status if isinstance(status, str) else None

    @property
    def attempt(self) -> int | None:
        """The attempt whose outcome this is (None: written before attempts were numbered)."""
        attempt = self.report.get("attempt")
        return attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None


@attrs.frozen(kw_only=True)
class SetAside:
    """An entry moved out of the way, and why."""

    #: Where the file is now (or still is, when even the move failed).
    path: Path
    problem: str


@attrs.frozen(kw_only=True)
class OutboxScan:
    """What :meth:`Outbox.scan` found: usable entries (oldest first) and set-aside ones."""

    entries: tuple[OutboxEntry, ...]
    set_aside: tuple[SetAside, ...]


class Outbox:
    """The undelivered outcomes of one worker, one durable JSON file each.

    Safe to use from several threads of one process: changes to the files go through
    one lock, and :meth:`remove` or :meth:`set_aside` of an entry leave alone a newer
    entry of the same operation that replaced it meanwhile.
    """

    def __init__(
        self,
        *,
        directory: Path,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self._directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        #: The token of the entry each operation's file holds now.
        self._owners: dict[str, int] = {}

    @classmethod
    def in_checkpoint_dir(
        cls,
        checkpoint_dir: Path,
        worker_id: str,
        *,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> Outbox:
        """The outbox of ``worker_id``: ``<checkpoint_dir>/.outbox/<worker_id>``."""
        problem = id_problem(worker_id)
        if problem is not None:
            message = f"worker id {worker_id!r} cannot name an outbox directory: {problem}"
            raise ValueError(message)
        return cls(directory=checkpoint_dir / OUTBOX_FOLDER / worker_id, clock=clock)

    @property
    def directory(self) -> Path:
        """The directory holding this worker's entries."""
        return self._directory

    def path_for(self, operation_id: str) -> Path:
        """Where the entry of ``operation_id`` lives (whether or not it exists)."""
        problem = id_problem(operation_id)
        if problem is not None:
            message = f"operation id {operation_id!r} cannot name an outbox entry: {problem}"
            raise ValueError(message)
        return self._directory / f"{operation_id}{_SUFFIX}"

    def put(self, operation_id: str, report: Mapping[str, Any]) -> OutboxEntry:
        """Write the outcome of ``operation_id`` durably, replacing an earlier one.

        Returns once the entry is on disk (file and directory fsynced). Raises
        ``OSError`` when the disk refuses (full, read-only, gone): then no new file is
        left behind and an earlier entry of the operation, if any, is intact. Raises
        ``ValueError`` when ``report`` is not plain JSON.
        """
        target = self.path_for(operation_id)
        written_at = self._clock()
        body = dict(report)
        document = {
            "format": _FORMAT,
            "version": _VERSION,
            "operation_id": operation_id,
            "written_at": written_at.isoformat(),
            "report": body,
        }
        encoded = json.dumps(document, allow_nan=False, separators=(",", ":")).encode("utf-8")
        self._directory.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before the rename
            dir=self._directory, prefix=_TEMP_PREFIX, suffix=".tmp", delete=False
        )
        temp = Path(handle.name)
        try:
            with handle:
                handle.write(encoded)
                handle.flush()
                os.fsync(handle.fileno())
            with self._lock:
                os.replace(temp, target)
                token = next(self._tokens)
                self._owners[operation_id] = token
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(self._directory)
        return OutboxEntry(
            operation_id=operation_id,
            report=body,
            written_at=written_at,
            path=target,
            token=token,
        )

    def remove(self, entry: OutboxEntry) -> None:
        """Forget ``entry`` (delivered); no error when it is gone already.

        Not fsynced: if a crash undoes the removal, the entry is sent once more and the
        backend answers that the operation already ended.
        """
        with self._lock:
            if entry.path is not None and self._owns(entry):
                entry.path.unlink(missing_ok=True)
                del self._owners[entry.operation_id]

    def set_aside(
        self, entry: OutboxEntry, problem: str, *, folder: str = REJECTED_FOLDER
    ) -> SetAside | None:
        """Move ``entry`` into ``folder`` (never sent again); None if it is not on disk
        (any more, or a newer entry of its operation replaced it).
        """
        with self._lock:
            if entry.path is None or not self._owns(entry):
                return None
            del self._owners[entry.operation_id]
            return self._move_aside(entry.path, problem, folder=folder)

    def _owns(self, entry: OutboxEntry) -> bool:
        return self._owners.get(entry.operation_id) == entry.token

    def scan(self) -> OutboxScan:
        """Every entry on disk, oldest first; unreadable ones are moved to ``corrupt/``.

        Temporary files of writes a crash interrupted are removed (they were never
        entries). A missing directory is an empty outbox. Raises ``OSError`` only when
        the directory exists but cannot be listed.
        """
        with self._lock:
            return self._scan()

    def _scan(self) -> OutboxScan:
        if not self._directory.is_dir():
            return OutboxScan(entries=(), set_aside=())
        entries: list[OutboxEntry] = []
        set_aside: list[SetAside] = []
        for path in sorted(self._directory.iterdir()):
            if path.name.startswith(_TEMP_PREFIX):
                path.unlink(missing_ok=True)
                continue
            if path.is_dir():
                continue  # corrupt/ and rejected/
            entry, problem = self._read(path)
            if entry is not None:
                token = self._owners.get(entry.operation_id) or next(self._tokens)
                self._owners[entry.operation_id] = token
                entries.append(attrs.evolve(entry, token=token))
            else:
                set_aside.append(self._move_aside(path, problem, folder=CORRUPT_FOLDER))
        entries.sort(key=lambda e: (e.written_at, e.operation_id))
        return OutboxScan(entries=tuple(entries), set_aside=tuple(set_aside))

    def _read(self, path: Path) -> tuple[OutboxEntry | None, str]:
        """The entry in ``path``, or None and what is wrong with it (never its content)."""
        operation_id = path.name.removesuffix(_SUFFIX)
        if not path.name.endswith(_SUFFIX) or id_problem(operation_id) is not None:
            return None, "its name is not <operation id>.json"
        try:
            size = path.stat().st_size
            if size > _MAX_ENTRY_BYTES:
                return None, f"it is {size} bytes, larger than any report ({_MAX_ENTRY_BYTES})"
            raw = path.read_bytes()
        except OSError as exc:
            return None, f"it cannot be read ({exc.strerror or exc})"
        try:
            document = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return None, "it is not UTF-8 text"
        except json.JSONDecodeError as exc:
            return None, f"it is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        return _checked(document, operation_id=operation_id, path=path)

    def _move_aside(self, path: Path, problem: str, *, folder: str) -> SetAside:
        destination = self._directory / folder
        try:
            destination.mkdir(parents=True, exist_ok=True)
            target = destination / path.name
            if target.exists():
                stamp = self._clock().strftime("%Y%m%dT%H%M%S%fZ")
                target = destination / f"{path.stem}.{stamp}{path.suffix}"
            os.replace(path, target)
        except OSError as exc:
            reason = f"{problem}; it could not be moved aside ({exc.strerror or exc})"
            return SetAside(path=path, problem=reason)
        return SetAside(path=target, problem=problem)


def _checked(document: Any, *, operation_id: str, path: Path) -> tuple[OutboxEntry | None, str]:
    problem = ""
    written_at = None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        problem = "it is not a ktrdr outcome"
    elif document.get("version") != _VERSION:
        problem = f"format version {document.get('version')!r} is not {_VERSION}"
    elif document.get("operation_id") != operation_id:
        problem = "the operation it names is not the one in its file name"
    elif not isinstance(document.get("report"), dict):
        problem = "it holds no report"
    else:
        try:
            written_at = datetime.datetime.fromisoformat(str(document.get("written_at")))
        except ValueError:
            problem = "its written_at is not a time"
        else:
            if written_at.tzinfo is None:
                problem = "its written_at has no time zone"
    if problem or written_at is None:
        return None, problem
    entry = OutboxEntry(
        operation_id=operation_id, report=document["report"], written_at=written_at, path=path
    )
    return entry, ""


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
