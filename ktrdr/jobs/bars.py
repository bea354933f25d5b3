"""OHLCV bars for training and backtests: a seeded synthetic generator and a CSV loader.

Runners get their market data here, so a run is reproducible: the generator is a pure
function of its seed, and the loader refuses a bad file with the line and field that
are wrong instead of training on garbage. This module does no I/O besides reading the
CSV file it is given.
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np
import numpy.typing as npt

from ktrdr.errors import BarsError

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


def load_csv(path: Path) -> Bars:
    """Read bars from a CSV file with a header row; raises :class:`BarsError` on bad input.

    Blank lines are skipped. Every other row must have a number in each required column,
    positive finite prices, ``low <= open, close <= high`` and a volume of at least 0.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return _parse(path, csv.reader(handle))
    except FileNotFoundError:
        message = f"bars file {path} does not exist; expected a CSV file with {_EXPECTED_HEADER}"
        raise BarsError(message) from None
    except UnicodeDecodeError as exc:
        message = f"bars file {path} is not UTF-8 text (byte {exc.start}); expected a CSV file"
        raise BarsError(message) from None
    except csv.Error as exc:
        message = f"bars file {path} is not a valid CSV file: {exc}"
        raise BarsError(message) from None
    except OSError as exc:
        message = f"bars file {path} cannot be read: {exc.strerror or exc}"
        raise BarsError(message) from None


def _parse(path: Path, reader: Reader) -> Bars:
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
    path: Path, line: int, row: list[str], width: int, positions: list[int]
) -> tuple[float, ...]:
    where = f"bars file {path}, line {line}"
    if len(row) != width:
        message = f"{where}: expected {width} fields like the header, found {len(row)}"
        raise BarsError(message)
    values: list[float] = []
    for column, position in zip(CSV_COLUMNS, positions, strict=True):
        raw = row[position].strip()
        try:
            value = float(raw)
        except ValueError:
            message = f"{where}: {column} {raw!r} is not a number"
            raise BarsError(message) from None
        if not math.isfinite(value):
            message = f"{where}: {column} {raw!r} is not a finite number"
            raise BarsError(message)
        values.append(value)
    open_, high, low, close, volume = values
    for column, value in (("open", open_), ("high", high), ("low", low), ("close", close)):
        if value <= 0:
            message = f"{where}: {column} {value:g} must be a positive price"
            raise BarsError(message)
    if volume < 0:
        message = f"{where}: volume {volume:g} must not be negative"
        raise BarsError(message)
    if not low <= min(open_, close) or not high >= max(open_, close):
        message = (
            f"{where}: expected low <= open, close <= high, "
            f"found open={open_:g} high={high:g} low={low:g} close={close:g}"
        )
        raise BarsError(message)
    return (open_, high, low, close, volume)


def moving_average(values: FloatArray, window: int) -> FloatArray:
    """Trailing mean over ``window`` values; NaN until ``window`` values exist."""
    sums = np.concatenate(([0.0], np.cumsum(values)))
    means = np.full(values.shape[0], np.nan)
    means[window - 1 :] = (sums[window:] - sums[:-window]) / window
    return means


def load_bars(*, csv_path: str | None, count: int, seed: int, min_bars: int) -> Bars:
    """The bars an operation asked for: the CSV's last ``count`` rows, or ``count`` generated.

    Raises :class:`BarsError` when fewer than ``min_bars`` bars are available.
    """
    if csv_path is None:
        bars = generate_bars(count=count, seed=seed)
    else:
        bars = load_csv(Path(csv_path)).tail(count)
    if len(bars) < min_bars:
        source = f"bars file {csv_path}" if csv_path else "the generator"
        message = f"{source} gave {len(bars)} bars; this operation needs at least {min_bars}"
        raise BarsError(message)
    return bars
