"""Performance metrics of an equity curve and of a list of closed trades.

Pure functions over numpy arrays. Every value they return is a finite float or None
(when the metric is undefined, e.g. a Sharpe ratio of a flat curve), so results can be
stored as JSON without NaN.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["max_drawdown", "sharpe_ratio", "total_return", "win_rate"]

FloatArray = npt.NDArray[np.float64]


def total_return(equity: FloatArray, initial: float) -> float:
    """Final equity over the initial capital, minus 1 (0.1 = +10%)."""
    return float(equity[-1] / initial - 1.0)


def sharpe_ratio(equity: FloatArray, *, periods_per_year: int) -> float | None:
    """Annualised Sharpe ratio of per-bar returns (risk-free rate 0); None when flat."""
    if equity.shape[0] < 2:
        return None
    returns = equity[1:] / equity[:-1] - 1.0
    deviation = float(np.std(returns))
    if deviation == 0.0 or not math.isfinite(deviation):
        return None
    return float(np.mean(returns) / deviation * math.sqrt(periods_per_year))


def max_drawdown(equity: FloatArray) -> float:
    """Largest fall from a running peak, as a fraction of that peak (0.25 = -25%)."""
    peaks = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peaks))


def win_rate(trade_pnls: FloatArray) -> float | None:
    """Share of closed trades with a positive profit; None when no trade closed."""
    if trade_pnls.shape[0] == 0:
        return None
    return float(np.count_nonzero(trade_pnls > 0) / trade_pnls.shape[0])
