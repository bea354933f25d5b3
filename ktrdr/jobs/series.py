"""Which steps of a run feed its series (loss per epoch, equity per bar), and the points so far.

A series has at most :data:`~ktrdr.protocol.MAX_SERIES_POINTS` points whatever the run's
length, so what the backend stores and a chart draws stays bounded: a run of ``total``
steps is sampled every ``ceil(total / MAX_SERIES_POINTS)`` steps, and at its last step.
Runs of up to that many steps (every training the defaults allow, a backtest of up to
1,000 bars) keep every step. The sampling depends only on ``total`` and the step, so a
resumed run samples the same steps as an uninterrupted one and re-sends the same points.

The step loop (``ktrdr.jobs.step_loop``) owns a :class:`SeriesRecorder`; nothing here
knows what a job computes or how the points travel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

from ktrdr.job_messages import SeriesUpdate
from ktrdr.protocol import MAX_SERIES_POINTS

__all__ = ["SeriesRecorder", "sample_stride", "sampled_steps"]


def sample_stride(total: int) -> int:
    """Steps between two samples of a run of ``total`` steps (1: every step)."""
    return max(1, math.ceil(total / MAX_SERIES_POINTS))


def sampled_steps(total: int, *, through: int | None = None) -> Iterator[int]:
    """The sampled steps of a run of ``total`` steps, ascending, up to ``through``."""
    last = total if through is None else min(through, total)
    stride = sample_stride(total)
    yield from range(stride, last + 1, stride)
    if last == total and total % stride:
        yield total


class SeriesRecorder:
    """Collects the sampled points of one run until :meth:`take` hands them on."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._stride = sample_stride(total)
        self._points: dict[str, list[tuple[int, float]]] = {}

    def is_sampled(self, step: int) -> bool:
        """True when ``step`` (steps done, from 1) feeds the series."""
        return step > 0 and (step % self._stride == 0 or step == self._total)

    def replay(self, through: int, values: Callable[[int], Mapping[str, float]]) -> None:
        """Record every sampled step up to ``through`` (a resumed run's history)."""
        for step in sampled_steps(self._total, through=through):
            self.record(step, values(step))

    def record(self, step: int, values: Mapping[str, float]) -> None:
        """Keep ``values`` as the points at ``step`` (the caller checked :meth:`is_sampled`).

        Values that are not finite (a diverging loss, a missing validation metric) are
        left out: JSON has no NaN, and a gap draws better than a spike.
        """
        for name, value in values.items():
            y = float(value)
            if math.isfinite(y):
                self._points.setdefault(name, []).append((step, y))

    def take(self) -> SeriesUpdate | None:
        """The points recorded since the last call, or None when there are none."""
        if not self._points:
            return None
        points = {name: tuple(values) for name, values in self._points.items()}
        self._points = {}
        return SeriesUpdate(points=points)
