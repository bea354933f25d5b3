"""The peer's tiny job for ``bench_tiny_ops.py`` (rq imports it by name in its workers).

It returns at once: the peer's operations carry no work, so the comparison charges
every millisecond to coordination (ktrdr's tiny training operation does a little more).
"""

from __future__ import annotations


def tiny(index: int) -> dict[str, int]:
    """Return the index as the job's result."""
    return {"index": index}
