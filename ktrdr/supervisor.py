"""Child-process supervision for ``ktrdr up``: start, watch and stop a local fleet.

Each child is a real ktrdr entrypoint (``python -m ktrdr.api.main`` or a worker
module) with its own environment and a log file. Stopping sends SIGTERM (workers
checkpoint and unregister), waits for a grace period, and only then SIGKILLs, so a
stopped fleet leaves no process behind.

A supervisor that never gets to stop its children (it was SIGKILLed, or crashed)
must not leave them running either: each child runs under :mod:`ktrdr.lifeline`,
holding the read end of a pipe whose only write end is ours, so the kernel tells
every child when this process is gone, however it died (and, on Linux, sends them
SIGTERM itself through ``PR_SET_PDEATHSIG``). The children then stop as on a
normal SIGTERM, and are killed after the same grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs


@attrs.frozen(kw_only=True)
class ChildSpec:
    """How to start one child: a name for humans, its module, environment and log file."""

    name: str
    module: str
    env: Mapping[str, str]
    log_path: Path
    args: tuple[str, ...] = ()


@attrs.define
class Child:
    """A started child process and where its output goes."""

    spec: ChildSpec
    process: subprocess.Popen[bytes]

    @property
    def exit_code(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.process.poll()

    def log_text(self, max_chars: int = 20_000) -> str:
        """The tail of the child's combined stdout/stderr."""
        try:
            text = self.spec.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-max_chars:]


class Supervisor:
    """Starts children and guarantees they are all gone after :meth:`stop`."""

    def __init__(self, *, python: str = sys.executable, grace_s: float = 30.0) -> None:
        self._python = python
        self._grace_s = grace_s
        self.children: list[Child] = []
        #: (read end, write end) of the lifeline pipe; only this process holds the write end.
        self._lifeline: tuple[int, int] | None = None

    def start(self, spec: ChildSpec) -> Child:
        """Start ``spec`` in its own session, under a lifeline, output to its log file.

        Call it from the main thread: Linux's parent-death signal follows the thread
        that started the child (from another thread, only the pipe is armed).
        """
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._lifeline is None:
            self._lifeline = os.pipe()  # not inheritable: only pass_fds hands the read end
        read_end = self._lifeline[0]
        command = [
            self._python,
            "-m",
            "ktrdr.lifeline",
            f"--fd={read_end}",
            f"--parent={os.getpid()}",
            f"--grace={self._grace_s:g}",
        ]
        if threading.current_thread() is threading.main_thread():
            command.append("--pdeathsig")
        command += ["--", spec.module, *spec.args]
        with spec.log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                env=dict(spec.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal reaches only us
                pass_fds=(read_end,),
            )
        child = Child(spec, process)
        self.children.append(child)
        return child

    def exited(self) -> list[Child]:
        """Children that have stopped on their own."""
        return [c for c in self.children if c.exit_code is not None]

    def stop(self, order: Sequence[Child] | None = None) -> dict[str, int]:
        """SIGTERM every child (in ``order``), wait up to the grace period, then SIGKILL.

        Returns each child's exit code by name.
        """
        children = list(order) if order is not None else list(reversed(self.children))
        for child in children:
            _signal(child.process, signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s
        for child in children:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                _signal(child.process, signal.SIGKILL)
                child.process.wait()
        if all(c.process.returncode is not None for c in self.children):
            self._close_lifeline()
        return {c.spec.name: c.process.returncode for c in children}

    def _close_lifeline(self) -> None:
        """Close the pipe once no child needs it (a later start opens a new one)."""
        if self._lifeline is not None:
            for fd in self._lifeline:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._lifeline = None


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal a child if it still runs (it may have exited on its own)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
