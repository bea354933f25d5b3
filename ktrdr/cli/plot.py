"""Terminal charts of an operation's series for ``ktrdr ops show ID --plot``.

Drawn with plotext (braille line charts, axes, legend): a maintained, pure-Python
library with no dependencies, where rich has no line charts. Pinned to its 5.x API
(``plt.plot``/``plt.build``), stable since 2022; 6.0 rewrote that API. plotext keeps
one global figure, so it is imported only when a chart is drawn (the ``ktrdr``
command stays quick to start) and cleared before each chart.

Series are grouped into charts by what they measure: ``loss`` with
``validation_loss``, ``accuracy`` with ``validation_accuracy``, ``equity`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["chart_groups", "render_charts"]

#: A prefix that puts a series on the chart of the series it names the rest of.
_VARIANT_PREFIXES = ("validation_",)
#: Charts drawn first, in this order.
_FIRST = ("loss", "accuracy", "equity")
#: Line colours in the order series are drawn (plotext colour names).
_COLORS = ("cyan", "orange", "green", "magenta", "blue", "red")


def chart_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Chart title -> the series drawn on it: loss, accuracy and equity first, then the
    rest by name; within a chart, the series by name.
    """
    groups: dict[str, list[str]] = {title: [] for title in _FIRST}
    for name in sorted(names):
        base = name
        for prefix in _VARIANT_PREFIXES:
            base = base.removeprefix(prefix)
        groups.setdefault(base, []).append(name)
    return {title: members for title, members in groups.items() if members}


def _points(raw: Any) -> tuple[list[float], list[float]]:
    """The x and y of ``[[x, y], ...]``, skipping anything that is not a number pair."""
    xs: list[float] = []
    ys: list[float] = []
    for point in raw if isinstance(raw, list) else []:
        if (
            isinstance(point, list | tuple)
            and len(point) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
        ):
            xs.append(float(point[0]))
            ys.append(float(point[1]))
    return xs, ys


def _integer_ticks(low: float, high: float, count: int = 5) -> list[int]:
    """About ``count`` round whole numbers from ``low`` to ``high`` (steps are whole)."""
    if high <= low:
        return [round(low)]
    raw = (high - low) / (count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    step = max(1, round(step))
    first = math.ceil(low / step) * step
    ticks = list(range(int(first), int(high) + 1, step))
    if round(low) not in ticks and (not ticks or ticks[0] - low > step / 2):
        ticks.insert(0, round(low))
    return ticks


def render_charts(
    data: Mapping[str, Any], *, width: int, height: int = 15, color: bool = True
) -> list[str]:
    """One chart per group of ``data`` (``GET .../series``), as text; [] when no points.

    ``width`` and ``height`` are in terminal cells; ``color`` keeps ANSI colours.
    """
    series = data.get("series")
    if not isinstance(series, Mapping):
        return []
    axis = str(data.get("x") or "step")
    drawable = {name: _points(raw) for name, raw in series.items()}
    drawable = {name: xy for name, xy in drawable.items() if xy[0]}
    import plotext as plt  # lazily: see the module docstring

    charts = []
    for title, names in chart_groups(list(drawable)).items():
        plt.clf()
        plt.plotsize(max(30, width), max(8, height))
        plt.theme("pro" if color else "clear")
        for index, name in enumerate(names):
            xs, ys = drawable[name]
            plt.plot(xs, ys, label=name, marker="braille", color=_COLORS[index % len(_COLORS)])
        xs = [x for name in names for x in drawable[name][0]]
        plt.xticks(_integer_ticks(min(xs), max(xs)))
        plt.title(title)
        plt.xlabel(axis)
        text = plt.build()
        charts.append(text if color else plt.uncolorize(text))
    return charts
