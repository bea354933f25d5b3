"""OHLCV bars for training and backtests: a seeded synthetic generator and a CSV loader.

Runners get their market data here, so a run is reproducible: the generator is a pure
function of its seed, and the loader refuses a bad file with the line and column that
are wrong instead of training on garbage. Messages never quote the file's content
(whoever creates an operation reads them). The file is opened only through
``ktrdr.jobs.data_files`` (inside ``KTRDR_DATA_DIR``, a regular file, bounded in size);
this module does no other I/O.
"""

from __future__ import annotations

import csv
import hashlib
import math
from typing import TYPE_CHECKING

import attrs
import numpy as np
import numpy.typing as npt

from ktrdr.config import DataSettings
from ktrdr.errors import BarsError
from ktrdr.jobs.data_files import data_lines, open_data_file

if TYPE_CHECKING:
    from _csv import Reader

__all__ = [
    "CSV_COLUMNS",
    "Bars",
    "generate_bars",
    "load_bars",
    "load_csv",
    "moving_average",
]

FloatArray = npt.NDArray[np.float64]

#: Columns a bars CSV must have (any order, any case); other columns are allowed.
CSV_COLUMNS = ("open", "high", "low", "close", "volume")
_EXPECTED_HEADER = "a header row with the columns " + ", ".join(CSV_COLUMNS)


@attrs.frozen(kw_only=True, eq=False)
class Bars:
    """Aligned OHLCV arrays (float64, oldest first), one entry per bar."""

    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def tail(self, count: int) -> Bars:
        """The most recent ``count`` bars (all of them when there are fewer)."""
        start = max(0, len(self) - count)
        return Bars(
            open=self.open[start:],
            high=self.high[start:],
            low=self.low[start:],
            close=self.close[start:],
            volume=self.volume[start:],
        )

    def fingerprint(self) -> str:
        """A digest of the values, so a resume can tell the data changed under it."""
        digest = hashlib.sha256()
        for column in (self.open, self.high, self.low, self.close, self.volume):
            digest.update(np.ascontiguousarray(column, dtype=np.float64).tobytes())
        return digest.hexdigest()


def generate_bars(*, count: int, seed: int, start_price: float = 100.0) -> Bars:
    """Synthetic daily-like bars: a random walk whose returns carry a little momentum.

    The momentum (AR(1) returns) gives a model something to learn; the same ``count``
    and ``seed`` always give the same bars.
    """
    if count < 1:
        message = f"expected at least 1 bar, got count={count}"
        raise BarsError(message)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.01, count)
    returns = np.empty(count)
    previous = 0.0
    for index, shock in enumerate(noise.tolist()):
        previous = 0.15 * previous + shock
        returns[index] = previous
    close = start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([start_price], close[:-1]))
    wick_up = np.abs(rng.normal(0.0, 0.003, count))
    wick_down = np.abs(rng.normal(0.0, 0.003, count))
    high = np.maximum(open_, close) * (1.0 + wick_up)
    low = np.minimum(open_, close) * (1.0 - wick_down)
    volume = rng.lognormal(10.0, 0.3, count)
    return Bars(open=open_, high=high, low=low, close=close, volume=volume)


def load_csv(data: DataSettings, csv_path: str) -> Bars:
    """Read bars from ``csv_path`` (relative to ``KTRDR_DATA_DIR``) with a header row.

    Raises :class:`BarsError` on bad input (:class:`~ktrdr.errors.DataFileRefused`
    for a path or file the data directory's rules refuse). Blank lines are skipped.
    Every other row must have a number in each required column, positive finite
    prices, ``low <= open, close <= high`` and a volume of at least 0.
    """
    with open_data_file(data, csv_path) as handle:
        lines = data_lines(handle, csv_path=csv_path, max_bytes=data.max_file_size)
        reader = csv.reader(lines)
        try:
            return _parse(csv_path, reader)
        except csv.Error as exc:  # its messages name the rule, never the text
            message = f"bars file {csv_path}, line {reader.line_num}: not valid CSV ({exc})"
            raise BarsError(message) from None
        except OSError as exc:
            message = f"bars file {csv_path} cannot be read ({exc.strerror or exc})"
            raise BarsError(message) from None


def _parse(path: str, reader: Reader) -> Bars:
    header = next(reader, None)
    if header is None:
        message = f"bars file {path} is empty; expected {_EXPECTED_HEADER}"
        raise BarsError(message)
    names = [name.strip().lower() for name in header]
    missing = [column for column in CSV_COLUMNS if column not in names]
    if missing:
        message = (
            f"bars file {path}, line 1: missing column(s) {', '.join(missing)}; "
            f"expected {_EXPECTED_HEADER}"
        )
        raise BarsError(message)
    positions = [names.index(column) for column in CSV_COLUMNS]
    rows: list[tuple[float, ...]] = []
    for row in reader:
        if not row or all(not field.strip() for field in row):
            continue
        rows.append(_parse_row(path, reader.line_num, row, len(names), positions))
    if not rows:
        message = f"bars file {path} has a header but no rows; expected one row per bar"
        raise BarsError(message)
    table = np.array(rows, dtype=np.float64)
    return Bars(
        open=table[:, 0].copy(),
        high=table[:, 1].copy(),
        low=table[:, 2].copy(),
        close=table[:, 3].copy(),
        volume=table[:, 4].copy(),
    )


def _parse_row(
    path: str, line: int, row: list[str], width: int, positions: list[int]
) -> tuple[float, ...]:
    """One row's values; errors name the line and column (1-based), never the text."""
    where = f"bars file {path}, line {line}"
    if len(row) != width:
        message = f"{where}: expected {width} fields like the header, found {len(row)}"
        raise BarsError(message)

    def at(name: str) -> str:
        return f"{where}, column {positions[CSV_COLUMNS.index(name)] + 1} ({name})"

    values: list[float] = []
    for column, position in zip(CSV_COLUMNS, positions, strict=True):
        try:
            value = float(row[position].strip())
        except ValueError:
            message = f"{at(column)}: not a number"
            raise BarsError(message) from None
        if not math.isfinite(value):
            message = f"{at(column)}: not a finite number"
            raise BarsError(message)
        values.append(value)
    open_, high, low, close, volume = values
    for column, value in (("open", open_), ("high", high), ("low", low), ("close", close)):
        if value <= 0:
            message = f"{at(column)}: a price must be positive"
            raise BarsError(message)
    if volume < 0:
        message = f"{at('volume')}: the volume must not be negative"
        raise BarsError(message)
    if not low <= min(open_, close) or not high >= max(open_, close):
        message = f"{where}: expected low <= open, close <= high"
        raise BarsError(message)
    return (open_, high, low, close, volume)


def moving_average(values: FloatArray, window: int) -> FloatArray:
    """Trailing mean over ``window`` values; NaN until ``window`` values exist."""
    sums = np.concatenate(([0.0], np.cumsum(values)))
    means = np.full(values.shape[0], np.nan)
    means[window - 1 :] = (sums[window:] - sums[:-window]) / window
    return means


def load_bars(
    *, csv_path: str | None, count: int, seed: int, min_bars: int, data: DataSettings
) -> Bars:
    """The bars an operation asked for: the CSV's last ``count`` rows, or ``count`` generated.

    ``csv_path`` is relative to ``data.dir``. Raises :class:`BarsError` when fewer than
    ``min_bars`` bars are available.
    """
    if csv_path is None:
        bars = generate_bars(count=count, seed=seed)
    else:
        bars = load_csv(data, csv_path).tail(count)
    if len(bars) < min_bars:
        source = f"bars file {csv_path}" if csv_path else "the generator"
        message = f"{source} gave {len(bars)} bars; this operation needs at least {min_bars}"
        raise BarsError(message)
    return bars
