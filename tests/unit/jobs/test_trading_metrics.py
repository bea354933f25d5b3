"""Backtest metrics over equity curves and trades."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ktrdr.jobs.trading_metrics import max_drawdown, sharpe_ratio, total_return, win_rate


def test_total_return_is_final_over_initial() -> None:
    """Total return is final equity / initial capital - 1."""
    assert total_return(np.array([100.0, 90.0, 125.0]), 100.0) == pytest.approx(0.25)


def test_max_drawdown_is_largest_fall_from_peak() -> None:
    """The drawdown is measured from the running peak, not the start."""
    equity = np.array([100.0, 120.0, 90.0, 130.0, 117.0])
    assert max_drawdown(equity) == pytest.approx(0.25)


def test_max_drawdown_of_rising_curve_is_zero() -> None:
    """A curve that never falls has no drawdown."""
    assert max_drawdown(np.array([1.0, 2.0, 3.0])) == 0.0


def test_sharpe_is_annualised_mean_over_std() -> None:
    """Sharpe = mean / std of per-bar returns * sqrt(periods per year)."""
    equity = np.array([100.0, 110.0, 99.0, 108.9])
    returns = np.array([0.1, -0.1, 0.1])
    expected = returns.mean() / returns.std() * math.sqrt(252)
    assert sharpe_ratio(equity, periods_per_year=252) == pytest.approx(expected)
    assert sharpe_ratio(equity, periods_per_year=1) == pytest.approx(expected / math.sqrt(252))


def test_sharpe_of_flat_or_short_curve_is_none() -> None:
    """A flat curve or a single point has no Sharpe ratio (None, never NaN)."""
    assert sharpe_ratio(np.array([5.0, 5.0, 5.0]), periods_per_year=252) is None
    assert sharpe_ratio(np.array([5.0]), periods_per_year=252) is None


def test_win_rate_counts_positive_trades() -> None:
    """Win rate is the share of trades with a positive profit; None without trades."""
    assert win_rate(np.array([1.0, -2.0, 0.0, 3.0])) == 0.5
    assert win_rate(np.array([])) is None
