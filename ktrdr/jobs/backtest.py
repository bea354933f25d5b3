"""The backtest job: a long-only moving-average crossover over bars, with costs.

At each bar's close, when the fast moving average is above the slow one the strategy
holds the symbol with all its equity, otherwise cash. A buy fills at close plus
slippage, a sell at close minus slippage, and both pay commission on the traded value;
an open position is closed at the last bar. The walk is sequential (bar by bar) so it
can stop at any bar, checkpoint (bar index, cash, position, equity so far, trade
profits) and resume to the same result as an uninterrupted run. Bad input raises
``JobFailed`` with the reason; the step loop turns it into a FAILED outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from ktrdr.config import CheckpointSettings, DataSettings
from ktrdr.errors import BarsError, JobFailed
from ktrdr.jobs.bars import Bars, load_bars, moving_average
from ktrdr.jobs.trading_metrics import max_drawdown, sharpe_ratio, total_return, win_rate
from ktrdr.protocol import (
    BacktestParameters,
    OperationType,
    Progress,
    describe_validation_error,
)

__all__ = ["BacktestJob"]


FloatArray = npt.NDArray[np.float64]

#: Progress reports per run (plus one at the end).
_PROGRESS_STEPS = 100


@attrs.define(kw_only=True, eq=False)
class _State:
    """The account as of bar ``index`` (the next bar to process): the checkpoint."""

    index: int
    cash: float
    shares: float
    entry_value: float
    fees: float
    equity: FloatArray
    trade_pnls: list[float]

    @classmethod
    def initial(cls, *, capital: float, bar_count: int) -> _State:
        return cls(
            index=0,
            cash=capital,
            shares=0.0,
            entry_value=0.0,
            fees=0.0,
            equity=np.zeros(bar_count),
            trade_pnls=[],
        )

    @classmethod
    def restore(cls, step: int, saved: Mapping[str, npt.NDArray[Any]], bar_count: int) -> _State:
        account = np.asarray(saved["account"], dtype=np.float64)
        walked = np.asarray(saved["equity"], dtype=np.float64)
        if account.shape != (4,) or walked.shape[0] != step or step > bar_count:
            message = f"its account or equity curve does not match bar {step}"
            raise ValueError(message)
        equity = np.zeros(bar_count)
        equity[:step] = walked
        cash, shares, entry_value, fees = (float(v) for v in account)
        pnls = np.asarray(saved["trade_pnls"], dtype=np.float64)
        return cls(
            index=step,
            cash=cash,
            shares=shares,
            entry_value=entry_value,
            fees=fees,
            equity=equity,
            trade_pnls=[float(v) for v in pnls],
        )

    def arrays(self) -> dict[str, FloatArray]:
        return {
            "account": np.array([self.cash, self.shares, self.entry_value, self.fees]),
            "equity": self.equity[: self.index].copy(),
            "trade_pnls": np.asarray(self.trade_pnls, dtype=np.float64),
        }

    def buy(self, price: float, params: BacktestParameters) -> None:
        fill = price * (1.0 + params.slippage)
        self.shares = self.cash / (fill * (1.0 + params.commission))
        self.fees += self.shares * fill * params.commission
        self.entry_value = self.cash
        self.cash = 0.0

    def sell(self, price: float, params: BacktestParameters) -> None:
        proceeds = self.shares * price * (1.0 - params.slippage)
        fee = proceeds * params.commission
        self.fees += fee
        self.cash += proceeds - fee
        self.trade_pnls.append(proceeds - fee - self.entry_value)
        self.shares = 0.0
        self.entry_value = 0.0


class BacktestJob:
    """Backtest operations: a bar is one step, checkpointed every ``bar_interval``."""

    operation_type = OperationType.BACKTEST
    unit = "bar"

    def checkpoint_every(self, settings: CheckpointSettings) -> int:
        """``KTRDR_CHECKPOINT_BAR_INTERVAL``."""
        return settings.bar_interval

    def prepare(self, parameters: Mapping[str, Any], data: DataSettings) -> _BacktestRun:
        """Validate the parameters and load the bars (from ``data.dir``); raises ``JobFailed``."""
        params = _parameters(parameters)
        try:
            bars = load_bars(
                csv_path=params.csv_path,
                count=params.bars,
                seed=params.seed,
                min_bars=params.slow_window + 1,
                data=data,
            )
        except BarsError as exc:
            raise JobFailed(str(exc)) from None
        return _BacktestRun(params=params, bars=bars)


class _BacktestRun:
    """One backtest: its parameters, prices and moving averages."""

    def __init__(self, *, params: BacktestParameters, bars: Bars) -> None:
        self.params = params
        self.total = len(bars)
        self.fingerprint: Mapping[str, Any] = {
            "parameters": params.model_dump(mode="json"),
            "bars": bars.fingerprint(),
        }
        self._close = bars.close.tolist()
        self._long = (
            moving_average(bars.close, params.fast_window)
            > moving_average(bars.close, params.slow_window)
        ).tolist()
        self._report_every = max(1, self.total // _PROGRESS_STEPS)

    def initial_state(self) -> _State:
        return _State.initial(capital=self.params.initial_capital, bar_count=self.total)

    def restore(self, step: int, arrays: Mapping[str, npt.NDArray[Any]]) -> _State:
        return _State.restore(step, arrays, self.total)

    def position(self, state: _State) -> int:
        return state.index

    def step(self, state: _State) -> bool:
        """Trade at this bar's close; the last bar also closes an open position."""
        index = state.index
        price = self._close[index]
        if index >= self.params.slow_window - 1:
            long_wanted = self._long[index]
            if long_wanted and state.shares == 0.0:
                state.buy(price, self.params)
            elif not long_wanted and state.shares > 0.0:
                state.sell(price, self.params)
        state.equity[index] = state.cash + state.shares * price
        state.index += 1
        if state.index == self.total and state.shares > 0.0:
            state.sell(price, self.params)
            state.equity[index] = state.cash
        return state.index % self._report_every == 0

    def arrays(self, state: _State) -> dict[str, npt.NDArray[Any]]:
        return dict(state.arrays())

    def progress(self, state: _State, message: str) -> Progress:
        return _progress(state, self.total, message)

    def series_at(self, state: _State, step: int) -> dict[str, float]:
        """The equity after bar ``step`` (closes included)."""
        return {"equity": float(state.equity[step - 1])}

    def result(self, state: _State) -> dict[str, Any]:
        return _result(state, self.params, self.total)


def _parameters(raw: Mapping[str, Any]) -> BacktestParameters:
    try:
        return BacktestParameters.model_validate(dict(raw))
    except ValidationError as exc:
        raise JobFailed(f"invalid backtest parameters: {describe_validation_error(exc)}") from None


def _progress(state: _State, count: int, message: str) -> Progress:
    equity = float(state.equity[state.index - 1]) if state.index else state.cash
    details: dict[str, Any] = {
        "bar": state.index,
        "bars": count,
        "equity": equity,
        "trades": len(state.trade_pnls),
    }
    return Progress(percent=100.0 * state.index / count, message=message, details=details)


def _result(state: _State, params: BacktestParameters, count: int) -> dict[str, Any]:
    equity = state.equity
    pnls = np.asarray(state.trade_pnls, dtype=np.float64)
    return {
        "symbol": params.symbol,
        "bars": count,
        "initial_capital": params.initial_capital,
        "final_equity": float(equity[-1]),
        "total_return": total_return(equity, params.initial_capital),
        "sharpe": sharpe_ratio(equity, periods_per_year=params.bars_per_year),
        "max_drawdown": max_drawdown(equity),
        "win_rate": win_rate(pnls),
        "trade_count": int(pnls.shape[0]),
        "fees_paid": state.fees,
    }
