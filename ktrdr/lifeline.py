"""Children of ``ktrdr up`` stop when ``ktrdr up`` is gone, however it died.

The supervisor starts each child as ``python -m ktrdr.lifeline --fd N --parent PID
--grace S [--pdeathsig] -- MODULE [ARGS...]``. This arms two independent alarms and
then runs MODULE as ``__main__`` in this same process (no extra process: signals,
exit codes and ``multiprocessing`` behave as under ``python -m MODULE``):

- **The lifeline.** Descriptor N is the read end of a pipe whose only write end the
  parent holds. The kernel closes that end when the parent exits for any reason,
  SIGKILL included, on any POSIX system. A daemon thread blocked reading the pipe
  then sends this process SIGTERM (every ktrdr entrypoint stops gracefully on it)
  and, if the process still runs ``grace`` seconds later, SIGKILL.
- **PR_SET_PDEATHSIG** (Linux, with ``--pdeathsig``): the kernel itself sends
  SIGTERM when the parent dies, even if this process's threads are starved. It fires
  when the parent *thread* that started the child ends, so the parent asks for it
  only when it started the child from its main thread.

A second SIGTERM is harmless: the entrypoints treat every exit signal as the same
request. This module must not import the rest of ktrdr: it runs before the child's
own entrypoint, which validates the configuration and owns everything else.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import runpy
import signal
import sys
import threading
from collections.abc import Sequence

__all__ = ["PR_SET_PDEATHSIG", "arm", "main", "set_parent_death_signal"]

#: From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: signal.Signals) -> bool:
    """Ask Linux to send ``sig`` when our parent (thread) dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def arm(*, fd: int, parent_pid: int, grace_s: float, pdeathsig: bool) -> None:
    """Arm both alarms for this process (see the module docstring).

    The descriptor is made non-inheritable so that programs this process executes
    do not carry it. If the parent is already gone (it died before we ran), the
    lifeline reads end-of-file at once and the process is stopped the same way.
    """
    os.set_inheritable(fd, False)
    if pdeathsig:
        set_parent_death_signal(signal.SIGTERM)
    watcher = threading.Thread(
        target=_watch, args=(fd, parent_pid, grace_s), name="ktrdr-lifeline", daemon=True
    )
    watcher.start()


def _watch(fd: int, parent_pid: int, grace_s: float) -> None:
    """Block until the parent's end of the pipe closes; then SIGTERM, later SIGKILL."""
    with contextlib.suppress(OSError):
        while os.read(fd, 64):  # the parent never writes; ignore anything that arrives
            pass
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(
            f"ktrdr: the process that started this one (pid {parent_pid}) is gone; stopping\n"
        )
        sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Event().wait(grace_s)
    os.kill(os.getpid(), signal.SIGKILL)


USAGE = (
    "usage: python -m ktrdr.lifeline --fd N --parent PID [--grace S] [--pdeathsig] "
    "-- MODULE [ARGS...]"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ktrdr.lifeline", usage=USAGE)
    parser.add_argument("--fd", type=int, required=True, help="read end of the lifeline pipe")
    parser.add_argument("--parent", type=int, required=True, help="pid of the parent")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds before SIGKILL")
    parser.add_argument("--pdeathsig", action="store_true", help="also use PR_SET_PDEATHSIG")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Arm the alarms, then run MODULE as ``python -m MODULE ARGS`` would."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    split = arguments.index("--") if "--" in arguments else len(arguments)
    if split + 1 >= len(arguments):
        raise SystemExit(USAGE)
    options = _parser().parse_args(arguments[:split])
    module, args = arguments[split + 1], arguments[split + 2 :]
    arm(
        fd=options.fd,
        parent_pid=options.parent,
        grace_s=options.grace,
        pdeathsig=options.pdeathsig,
    )
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
