"""Checkpoints: the state a job needs to resume an operation, kept safely on disk.

One file per operation, ``<dir>/<operation id>/checkpoint.zip``: a ZIP archive of a
JSON header (format, version, operation, kind, step, the job's metadata) and the job's
state as opaque bytes (``ktrdr.jobs`` encodes it; this module never interprets it, so
the worker runtime needs no numpy). A save writes a temporary file in the same
directory, fsyncs it and renames it over the old one, so a crash leaves either the old
or the new checkpoint, never half of one. The job process sends its checkpoints to the
worker, which stores them here; only the worker writes, deletes and expires them. A
completed operation's checkpoint is deleted once the backend acknowledged its outcome
(``ktrdr.workers.delivery``), not before.
This module knows nothing about HTTP or the backend.

Fencing: every attempt of an operation (each dispatch to a worker) has a number, and
workers sharing the directory must never let an earlier attempt overwrite a later
one's checkpoint (a worker paused past the orphan timeout wakes up still running its
job while the retry runs elsewhere). ``<dir>/<operation id>/attempt`` holds the
highest attempt that claimed the operation; claiming, saving and deleting with an
attempt number take an exclusive ``flock`` on it, and refuse
(:class:`CheckpointFenced`) an attempt older than the one it holds. The file stays
when a checkpoint is deleted, so a stale attempt cannot write after the operation
completed either; it expires with ``max_age_days`` like the checkpoints. ``flock``
works across processes on one host and across NFS clients (Linux emulates it with
byte-range locks there).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ktrdr.config import CheckpointSettings, env_name
from ktrdr.errors import (
    CheckpointCorrupt,
    CheckpointError,
    CheckpointFenced,
    CheckpointMissing,
    ConfigurationError,
)
from ktrdr.job_messages import CheckpointData
from ktrdr.vocabulary import id_problem
from ktrdr.workers.outbox import OUTBOX_FOLDER

__all__ = [
    "CHECKPOINT_FILE",
    "FENCE_FILE",
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointFenced",
    "CheckpointMissing",
    "CheckpointStore",
]

_FIELDS = attrs.fields(CheckpointSettings)
CHECKPOINT_FILE = "checkpoint.zip"
#: Holds the highest attempt that claimed the operation (fixed width, locked to update).
FENCE_FILE = "attempt"
_FENCE_WIDTH = 20
_HEADER = "header.json"
_STATE = "state.bin"
_FORMAT = "ktrdr-checkpoint"
_VERSION = 2
_TEMP_PREFIX = ".checkpoint-"


class CheckpointStore:
    """Saves, loads, deletes and expires the checkpoints under ``settings.dir``."""

    def __init__(self, *, settings: CheckpointSettings) -> None:
        self._settings = settings

    @property
    def settings(self) -> CheckpointSettings:
        """The settings this store follows."""
        return self._settings

    @property
    def root(self) -> Path:
        """The directory holding one subdirectory per operation."""
        return self._settings.dir

    def ensure_writable(self) -> None:
        """Startup check: the directory exists (or can be made) and accepts files.

        Raises ``ConfigurationError`` naming KTRDR_CHECKPOINT_DIR and the path, so a
        worker refuses to start rather than fail its first checkpoint hours later.
        """
        root = self.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=_TEMP_PREFIX + "probe-"):
                pass
        except OSError as exc:
            reason = exc.strerror or str(exc)
            problem = (
                f"{env_name(_FIELDS.dir)}={str(root)!r}: the checkpoint directory is not "
                f"writable ({reason}); expected a directory the worker can create files in"
            )
            raise ConfigurationError([problem]) from None

    def path_for(self, operation_id: str) -> Path:
        """Where the checkpoint of ``operation_id`` lives (whether or not it exists)."""
        return self._directory(operation_id) / CHECKPOINT_FILE

    def exists(self, operation_id: str) -> bool:
        """True when a checkpoint file is present for ``operation_id``."""
        return self.path_for(operation_id).is_file()

    def claim(self, operation_id: str, *, attempt: int, fresh: bool = False) -> None:
        """``attempt`` takes the operation's checkpoint over; ``fresh`` also removes it.

        Raises :class:`CheckpointFenced` when a later attempt already claimed it (this
        attempt is stale), ``OSError`` when the disk refuses.
        """
        with self._fenced(operation_id, attempt):
            if fresh:
                self._remove_checkpoint(operation_id)

    def fence(self, operation_id: str) -> int:
        """The highest attempt that claimed the operation (0: none)."""
        path = self._directory(operation_id) / FENCE_FILE
        try:
            return _fence_value(path.read_bytes())
        except FileNotFoundError:
            return 0

    def save(
        self, operation_id: str, *, kind: str, data: CheckpointData, attempt: int | None = None
    ) -> Path:
        """Write the checkpoint atomically (temp file, fsync, rename); returns its path.

        With ``attempt``, only while no later attempt claimed the operation
        (:class:`CheckpointFenced` otherwise); the attempt is recorded in the header.
        Raises ``OSError`` when the disk refuses; no partial file is left behind.
        """
        if attempt is None:
            return self._write(operation_id, kind=kind, data=data, attempt=None)
        with self._fenced(operation_id, attempt):
            return self._write(operation_id, kind=kind, data=data, attempt=attempt)

    def _write(
        self, operation_id: str, *, kind: str, data: CheckpointData, attempt: int | None
    ) -> Path:
        header: dict[str, object] = {
            "format": _FORMAT,
            "version": _VERSION,
            "operation_id": operation_id,
            "kind": kind,
            "step": data.step,
            "meta": dict(data.meta),
        }
        if attempt is not None:
            header["attempt"] = attempt
        encoded = json.dumps(header, allow_nan=False, sort_keys=True).encode("utf-8")
        directory = self._directory(operation_id)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / CHECKPOINT_FILE
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before the rename
            dir=directory, prefix=_TEMP_PREFIX, suffix=".tmp", delete=False
        )
        temp = Path(handle.name)
        try:
            with handle:
                with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
                    archive.writestr(_HEADER, encoded)
                    archive.writestr(_STATE, data.state)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(directory)
        return target

    def load(self, operation_id: str, *, kind: str) -> CheckpointData:
        """Read the checkpoint of ``operation_id`` written by a ``kind`` job.

        Raises :class:`CheckpointMissing` or :class:`CheckpointCorrupt` with a message
        naming the file and what is wrong with it.
        """
        path = self.path_for(operation_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            message = (
                f"no checkpoint for operation {operation_id} at {path} (never saved, "
                f"deleted after success, or purged after "
                f"{env_name(_FIELDS.max_age_days)}={self._settings.max_age_days})"
            )
            raise CheckpointMissing(message) from None
        except OSError as exc:
            message = f"checkpoint {path} cannot be read: {exc.strerror or exc}"
            raise CheckpointCorrupt(message) from None
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                header = json.loads(archive.read(_HEADER).decode("utf-8"))
                state = archive.read(_STATE)
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
            message = f"checkpoint {path} is corrupt or not a ktrdr checkpoint ({exc})"
            raise CheckpointCorrupt(message) from None
        return _checked(path, header, state, operation_id=operation_id, kind=kind)

    def delete(self, operation_id: str, *, attempt: int | None = None) -> None:
        """Remove the operation's checkpoint (no error when there is none).

        Without ``attempt``, the whole operation directory goes. With it, only the
        checkpoint, only while no later attempt claimed the operation
        (:class:`CheckpointFenced` otherwise), and the claim stays.
        """
        if attempt is None:
            shutil.rmtree(self._directory(operation_id), ignore_errors=True)
            return
        with self._fenced(operation_id, attempt):
            self._remove_checkpoint(operation_id)

    def _remove_checkpoint(self, operation_id: str) -> None:
        directory = self._directory(operation_id)
        (directory / CHECKPOINT_FILE).unlink(missing_ok=True)
        for temp in directory.glob(_TEMP_PREFIX + "*"):
            temp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _fenced(self, operation_id: str, attempt: int) -> Iterator[None]:
        """Hold the operation's fence for ``attempt``: refuse it if a later one holds it,
        raise the fence to it otherwise.
        """
        directory = self._directory(operation_id)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / FENCE_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = _fence_value(os.pread(fd, _FENCE_WIDTH + 1, 0))
            if current > attempt:
                message = (
                    f"attempt {attempt} of operation {operation_id} may not touch its "
                    f"checkpoint: attempt {current} took it over ({path})"
                )
                raise CheckpointFenced(message)
            if current < attempt:
                os.pwrite(fd, f"{attempt:0{_FENCE_WIDTH}d}\n".encode(), 0)
                os.fsync(fd)
            yield
        finally:
            os.close(fd)  # releases the lock

    def purge_expired(self, now: datetime.datetime) -> list[Path]:
        """Delete files older than ``max_age_days`` (by mtime); returns what was removed.

        Directories left empty are removed too. The workers' outbox (``.outbox``) is
        left alone: an outcome waiting for the backend never expires. Called at worker
        start and periodically by the runtime; ``now`` is an aware datetime from its
        clock.
        """
        if not self.root.is_dir():
            return []
        cutoff = now - datetime.timedelta(days=self._settings.max_age_days)
        removed: list[Path] = []
        directories = (p for p in self.root.iterdir() if p.is_dir() and p.name != OUTBOX_FOLDER)
        for directory in sorted(directories):
            for file in sorted(p for p in directory.iterdir() if p.is_file()):
                modified = datetime.datetime.fromtimestamp(
                    file.stat().st_mtime, tz=datetime.timezone.utc
                )
                if modified < cutoff:
                    file.unlink(missing_ok=True)
                    removed.append(file)
            if not any(directory.iterdir()):
                directory.rmdir()
        return removed

    def _directory(self, operation_id: str) -> Path:
        # Ids become directory names: the id rule allows no separator and no leading dot.
        problem = id_problem(operation_id)
        if problem is not None:
            message = f"operation id {operation_id!r} cannot name a checkpoint directory: {problem}"
            raise ValueError(message)
        return self.root / operation_id


def _checked(
    path: Path,
    header: Any,
    state: bytes,
    *,
    operation_id: str,
    kind: str,
) -> CheckpointData:
    """Validate the metadata header; a mismatch is reported as corrupt."""
    problem = None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        problem = "it is not a ktrdr checkpoint"
    elif header.get("version") != _VERSION:
        problem = f"format version {header.get('version')!r} is not {_VERSION}"
    elif header.get("kind") != kind:
        problem = f"it was written by a {header.get('kind')!r} job, not {kind!r}"
    elif header.get("operation_id") != operation_id:
        problem = f"it belongs to operation {header.get('operation_id')!r}"
    elif not isinstance(header.get("step"), int) or not isinstance(header.get("meta"), dict):
        problem = "its metadata lacks the step or the job's inputs"
    if problem is not None:
        message = f"checkpoint {path} cannot be used: {problem}"
        raise CheckpointCorrupt(message)
    return CheckpointData(step=header["step"], meta=header["meta"], state=state)


def _fence_value(raw: bytes) -> int:
    """The attempt a fence file holds; 0 for an empty (new) one."""
    text = raw.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
