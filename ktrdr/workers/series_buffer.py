"""The running operation's series on the worker: every point, and those not delivered yet.

Heartbeats carry the points the backend has not acknowledged (so a chart follows the
run live); the final report carries every point (so what the backend stores is whole
even if a heartbeat's points were lost with a backend restart). A point is keyed by its
series and step, so sending one twice is harmless: the backend keeps one value per step.
The job samples its series (at most ``MAX_SERIES_POINTS`` steps each), so the buffer is
bounded. Used on the event loop only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ktrdr.job_messages import SeriesUpdate

__all__ = ["SeriesBuffer"]

Points = dict[str, list[tuple[int, float]]]


class SeriesBuffer:
    """Points of one operation, by series name and step."""

    def __init__(self) -> None:
        self._all: dict[str, dict[int, float]] = {}
        self._unsent: dict[str, dict[int, float]] = {}

    def add(self, update: SeriesUpdate) -> None:
        """Keep the job's new points (a later value for a step replaces the earlier one)."""
        for name, points in update.points.items():
            known = self._all.setdefault(name, {})
            unsent = self._unsent.setdefault(name, {})
            for x, y in points:
                known[x] = y
                unsent[x] = y

    def unsent(self) -> Points | None:
        """The points not acknowledged yet (a copy), or None when there are none."""
        return _points(self._unsent)

    def everything(self) -> Points | None:
        """Every point of the operation, or None when the job sent none."""
        return _points(self._all)

    def acknowledge(self, sent: Mapping[str, Sequence[tuple[int, float]]]) -> None:
        """The backend took ``sent``: drop those points from the unsent ones.

        A point whose value changed after it was sent stays unsent.
        """
        for name, points in sent.items():
            unsent = self._unsent.get(name)
            if unsent is None:
                continue
            for x, y in points:
                if unsent.get(x) == y:
                    del unsent[x]
            if not unsent:
                del self._unsent[name]


def _points(source: dict[str, dict[int, float]]) -> Points | None:
    points = {name: sorted(values.items()) for name, values in source.items() if values}
    return points or None
