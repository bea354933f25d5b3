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
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import attrs

from ktrdr.config import CheckpointSettings, env_name
from ktrdr.errors import (
    CheckpointCorrupt,
    CheckpointError,
    CheckpointMissing,
    ConfigurationError,
)
from ktrdr.job_messages import CheckpointData
from ktrdr.vocabulary import id_problem
from ktrdr.workers.outbox import OUTBOX_FOLDER

__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointMissing",
    "CheckpointStore",
]

_FIELDS = attrs.fields(CheckpointSettings)
CHECKPOINT_FILE = "checkpoint.zip"
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

    def save(self, operation_id: str, *, kind: str, data: CheckpointData) -> Path:
        """Write the checkpoint atomically (temp file, fsync, rename); returns its path.

        Raises ``OSError`` when the disk refuses; no partial file is left behind.
        """
        header = {
            "format": _FORMAT,
            "version": _VERSION,
            "operation_id": operation_id,
            "kind": kind,
            "step": data.step,
            "meta": dict(data.meta),
        }
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

    def delete(self, operation_id: str) -> None:
        """Remove the operation's checkpoint directory (no error when there is none)."""
        shutil.rmtree(self._directory(operation_id), ignore_errors=True)

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


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
