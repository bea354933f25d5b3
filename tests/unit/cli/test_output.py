"""TolerantStream: writing to a pipe whose reader is gone never raises."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from ktrdr.cli.output import TolerantStream, tolerant


def test_a_closed_pipe_marks_the_stream_broken_and_output_is_dropped() -> None:
    """Write and flush after the reader closed: no error, broken, later writes dropped."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as raw:
        stream = TolerantStream(raw)

        assert stream.write("stopping fleet ...\n") == len("stopping fleet ...\n")
        stream.flush()
        assert stream.broken is True
        assert stream.write("stopped\n") == len("stopped\n")
        assert stream.isatty() is False
        raw.write("the descriptor now points at /dev/null\n")
        raw.flush()  # would raise BrokenPipeError without the redirect


def test_a_working_stream_passes_everything_through() -> None:
    """On a healthy stream every write arrives and nothing is marked broken."""
    buffer = io.StringIO()
    stream = tolerant(buffer)

    stream.write("backend  http://127.0.0.1:8000\n")
    stream.flush()

    assert buffer.getvalue() == "backend  http://127.0.0.1:8000\n"
    assert isinstance(stream, TolerantStream)
    assert stream.broken is False


def test_a_process_whose_reader_died_exits_0_without_a_message(tmp_path: Path) -> None:
    """Python's exit flush finds /dev/null, not the closed pipe: exit 0, nothing on stderr."""
    code = (
        "import sys\n"
        "from ktrdr.cli.output import tolerant\n"
        "out = tolerant(sys.stdout)\n"
        "sys.stdin.read()\n"  # the test closes our stdin once the reader is gone
        "print('x' * 100, file=out)\n"
        "out.flush()\n"
        "sys.stdout.write('still buffered at exit')\n"
    )
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    os.close(read_end)  # the reader is gone before the child writes

    _, stderr = process.communicate(b"", timeout=30)

    assert (process.returncode, stderr.decode()) == (0, "")
