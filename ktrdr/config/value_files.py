"""Reading the file a ``<NAME>_FILE`` variable names (docker secrets, mounted values).

The file must be a regular, readable UTF-8 file of at most :data:`MAX_VALUE_FILE_BYTES`;
anything else is a :class:`~ktrdr.config.results.Problem` naming the ``_FILE``
variable and the path, never the file's content (such files hold secrets, and the
path could name any file). At most one byte past the limit is read.
"""

from __future__ import annotations

import stat
from pathlib import Path

from ktrdr.config.results import Problem

#: Largest value file read; a bigger one is refused.
MAX_VALUE_FILE_BYTES = 64 * 1024

__all__ = ["MAX_VALUE_FILE_BYTES", "read_value_file"]


def read_value_file(file_var: str, file_path: str) -> str | Problem:
    """The content of the file ``file_var`` names, or a problem saying why not."""
    wanted = "expected the path of a readable file holding the value"
    text = file_path.strip()
    if not text or "\x00" in text:
        return Problem(file_var, file_path, wanted)
    path = Path(text)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            return Problem(file_var, file_path, f"is a directory; {wanted}")
        if not stat.S_ISREG(mode):
            return Problem(file_var, file_path, f"is not a regular file; {wanted}")
        with path.open("rb") as handle:
            data = handle.read(MAX_VALUE_FILE_BYTES + 1)
    except FileNotFoundError:
        return Problem(file_var, file_path, f"file not found; {wanted}")
    except PermissionError:
        return Problem(file_var, file_path, f"permission denied; {wanted}")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "I/O error"
        return Problem(file_var, file_path, f"cannot be read ({reason}); {wanted}")
    if len(data) > MAX_VALUE_FILE_BYTES:
        expected = f"expected a file of at most {MAX_VALUE_FILE_BYTES} bytes"
        return Problem(file_var, file_path, expected)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return Problem(file_var, file_path, "expected a UTF-8 text file")
