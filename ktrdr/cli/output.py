"""Terminal output that a closed pipe or a hung-up terminal cannot turn into a crash.

``ktrdr up | tee fleet.log`` and Ctrl-C: the terminal sends SIGINT to both, ``tee``
exits first, and ``ktrdr up``'s next line ("stopping fleet ...") meets a closed pipe.
Python ignores SIGPIPE, so the write raises ``BrokenPipeError``; raised there, it
would skip stopping the children. Commands that must finish their work whatever
happens to their output write through :class:`TolerantStream`: the first failed
write marks the stream broken, points its descriptor at ``/dev/null`` (so the
interpreter's own flush at exit does not fail again and turn exit 0 into 120), and
drops everything written after it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, TextIO, cast

__all__ = ["TolerantStream", "tolerant"]


class TolerantStream:
    """Wraps a text stream; write and flush never raise ``OSError`` or ``ValueError``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        """Write ``text``, or drop it once the other end is gone; always "succeeds"."""
        if not self.broken:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self._break()
        return len(text)

    def flush(self) -> None:
        """Flush, or note that the other end is gone."""
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._break()

    def isatty(self) -> bool:
        """Whether the wrapped stream is a terminal (False once broken)."""
        if self.broken:
            return False
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _break(self) -> None:
        """Point the descriptor at /dev/null: the buffered rest goes nowhere, silently."""
        self.broken = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)


def tolerant(stream: TextIO) -> TextIO:
    """``stream`` wrapped in a :class:`TolerantStream`, typed as the stream it stands for."""
    return cast(TextIO, TolerantStream(stream))
