"""Checkpoints: the state a runner needs to resume an operation, saved safely on disk.

One file per operation, ``<dir>/<operation id>/checkpoint.npz``: numpy arrays plus a
JSON metadata entry, loaded with ``allow_pickle=False`` (never pickle: a checkpoint
file must not be able to run code). A save writes a temporary file in the same
directory, fsyncs it and renames it over the old one, so a crash leaves either the old
or the new checkpoint, never half of one. :class:`CheckpointPolicy` decides when a
checkpoint is due (every N steps or after a time interval, whichever comes first).
This module knows nothing about HTTP or the backend.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from ktrdr.config import CheckpointSettings
from ktrdr.errors import ConfigurationError, KtrdrError

__all__ = [
    "CHECKPOINT_FILE",
    "Checkpoint",
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointMissing",
    "CheckpointPolicy",
    "CheckpointStore",
]

CHECKPOINT_FILE = "checkpoint.npz"
_META_KEY = "__meta__"
_FORMAT = "ktrdr-checkpoint"
_VERSION = 1
_TEMP_PREFIX = ".checkpoint-"
#: Operation ids become directory names: no separators, no leading dot.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class CheckpointError(KtrdrError):
    """A checkpoint cannot be used to resume."""


class CheckpointMissing(CheckpointError):
    """No checkpoint exists for the operation."""


class CheckpointCorrupt(CheckpointError):
    """The checkpoint file exists but cannot be read (truncated, garbage, wrong kind)."""


@attrs.frozen(kw_only=True, eq=False)
class Checkpoint:
    """A loaded checkpoint: what the runner saved, plus the step it was saved at."""

    kind: str
    step: int
    meta: Mapping[str, Any]
    arrays: Mapping[str, npt.NDArray[Any]]


class CheckpointPolicy:
    """Says when a checkpoint is due: ``every`` steps or ``interval`` of clock time.

    Whichever comes first, counted from the last save (or the start). ``clock`` is a
    monotonic clock in seconds, injected so tests control time.
    """

    def __init__(
        self,
        *,
        every: int,
        interval: datetime.timedelta,
        clock: Callable[[], float],
        start_step: int = 0,
    ) -> None:
        self._every = every
        self._interval_s = interval.total_seconds()
        self._clock = clock
        self._last_step = start_step
        self._last_time = clock()

    def due(self, step: int) -> bool:
        """True when ``step`` is ``every`` steps past the last save, or time is up."""
        if step - self._last_step >= self._every:
            return True
        return self._clock() - self._last_time >= self._interval_s

    def saved(self, step: int) -> None:
        """Record a save at ``step`` (restarts both counters)."""
        self._last_step = step
        self._last_time = self._clock()


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

    def epoch_policy(self, *, clock: Callable[[], float], start_step: int = 0) -> CheckpointPolicy:
        """The policy for training: ``epoch_interval`` epochs or ``time_interval``."""
        return CheckpointPolicy(
            every=self._settings.epoch_interval,
            interval=self._settings.time_interval,
            clock=clock,
            start_step=start_step,
        )

    def bar_policy(self, *, clock: Callable[[], float], start_step: int = 0) -> CheckpointPolicy:
        """The policy for backtests: ``bar_interval`` bars or ``time_interval``."""
        return CheckpointPolicy(
            every=self._settings.bar_interval,
            interval=self._settings.time_interval,
            clock=clock,
            start_step=start_step,
        )

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
                f"KTRDR_CHECKPOINT_DIR={str(root)!r}: the checkpoint directory is not "
                f"writable ({reason}); expected a directory the worker can create files in"
            )
            raise ConfigurationError([problem]) from None

    def path_for(self, operation_id: str) -> Path:
        """Where the checkpoint of ``operation_id`` lives (whether or not it exists)."""
        return self._directory(operation_id) / CHECKPOINT_FILE

    def exists(self, operation_id: str) -> bool:
        """True when a checkpoint file is present for ``operation_id``."""
        return self.path_for(operation_id).is_file()

    def save(
        self,
        operation_id: str,
        *,
        kind: str,
        step: int,
        meta: Mapping[str, Any],
        arrays: Mapping[str, npt.NDArray[Any]],
    ) -> Path:
        """Write the checkpoint atomically (temp file, fsync, rename); returns its path.

        Raises ``OSError`` when the disk refuses; no partial file is left behind.
        """
        if _META_KEY in arrays:
            message = f"array name {_META_KEY!r} is reserved for checkpoint metadata"
            raise ValueError(message)
        header = {
            "format": _FORMAT,
            "version": _VERSION,
            "operation_id": operation_id,
            "kind": kind,
            "step": step,
            "meta": dict(meta),
        }
        encoded = json.dumps(header, allow_nan=False, sort_keys=True).encode("utf-8")
        payload: dict[str, Any] = {name: np.asarray(value) for name, value in arrays.items()}
        for name, value in payload.items():
            if value.dtype.hasobject:
                message = f"array {name!r} holds Python objects; checkpoints store numbers only"
                raise ValueError(message)
        payload[_META_KEY] = np.frombuffer(encoded, dtype=np.uint8)
        directory = self._directory(operation_id)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / CHECKPOINT_FILE
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before the rename
            dir=directory, prefix=_TEMP_PREFIX, suffix=".tmp", delete=False
        )
        temp = Path(handle.name)
        try:
            with handle:
                # Object arrays were refused above, so nothing here is pickled (numpy
                # before 2.1 has no allow_pickle argument on savez).
                np.savez(handle, **payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(directory)
        return target

    def load(self, operation_id: str, *, kind: str) -> Checkpoint:
        """Read the checkpoint of ``operation_id`` written by a ``kind`` runner.

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
                f"KTRDR_CHECKPOINT_MAX_AGE_DAYS={self._settings.max_age_days})"
            )
            raise CheckpointMissing(message) from None
        except OSError as exc:
            message = f"checkpoint {path} cannot be read: {exc.strerror or exc}"
            raise CheckpointCorrupt(message) from None
        try:
            arrays = _read_arrays(data)
            header = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
            message = f"checkpoint {path} is corrupt or not a ktrdr checkpoint ({exc})"
            raise CheckpointCorrupt(message) from None
        return _checked(path, header, arrays, operation_id=operation_id, kind=kind)

    def delete(self, operation_id: str) -> None:
        """Remove the operation's checkpoint directory (no error when there is none)."""
        shutil.rmtree(self._directory(operation_id), ignore_errors=True)

    def purge_expired(self, now: datetime.datetime) -> list[Path]:
        """Delete files older than ``max_age_days`` (by mtime); returns what was removed.

        Operation directories left empty are removed too. Called at worker start and
        periodically by the runtime; ``now`` is an aware datetime from its clock.
        """
        if not self.root.is_dir():
            return []
        cutoff = now - datetime.timedelta(days=self._settings.max_age_days)
        removed: list[Path] = []
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
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
        if not _SAFE_ID.match(operation_id):
            message = (
                f"operation id {operation_id!r} cannot name a checkpoint directory; expected "
                "letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
            )
            raise ValueError(message)
        return self.root / operation_id


def _read_arrays(data: bytes) -> dict[str, npt.NDArray[Any]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: np.array(archive[name]) for name in archive.files}


def _checked(
    path: Path,
    header: Any,
    arrays: dict[str, npt.NDArray[Any]],
    *,
    operation_id: str,
    kind: str,
) -> Checkpoint:
    """Validate the metadata header; a mismatch is reported as corrupt."""
    problem = None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        problem = "it is not a ktrdr checkpoint"
    elif header.get("version") != _VERSION:
        problem = f"format version {header.get('version')!r} is not {_VERSION}"
    elif header.get("kind") != kind:
        problem = f"it was written by a {header.get('kind')!r} runner, not {kind!r}"
    elif header.get("operation_id") != operation_id:
        problem = f"it belongs to operation {header.get('operation_id')!r}"
    elif not isinstance(header.get("step"), int) or not isinstance(header.get("meta"), dict):
        problem = "its metadata lacks the step or the runner's state"
    if problem is not None:
        message = f"checkpoint {path} cannot be used: {problem}"
        raise CheckpointCorrupt(message)
    return Checkpoint(kind=kind, step=header["step"], meta=header["meta"], arrays=arrays)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
