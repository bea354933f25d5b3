"""The backtest runner: a long-only moving-average crossover over bars, with costs.

At each bar's close, when the fast moving average is above the slow one the strategy
holds the symbol with all its equity, otherwise cash. A buy fills at close plus
slippage, a sell at close minus slippage, and both pay commission on the traded value;
an open position is closed at the last bar. The walk is sequential (bar by bar) so it
can stop at any bar, checkpoint (bar index, cash, position, equity so far, trade
profits) and resume to the same result as an uninterrupted run. Bad input ends as a
FAILED outcome; nothing raised inside escapes :meth:`BacktestRunner.run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from ktrdr.protocol import (
    BacktestParameters,
    OperationType,
    Progress,
    describe_validation_error,
)
from ktrdr.workers.bars import BarsError, load_bars, moving_average
from ktrdr.workers.checkpointed import CheckpointedRunner, RunFailed
from ktrdr.workers.checkpoints import Checkpoint
from ktrdr.workers.metrics import max_drawdown, sharpe_ratio, total_return, win_rate
from ktrdr.workers.runner import RunContext, RunOutcome

__all__ = ["BacktestRunner"]


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
    def from_checkpoint(cls, checkpoint: Checkpoint, bar_count: int) -> _State:
        account = np.asarray(checkpoint.arrays["account"], dtype=np.float64)
        walked = np.asarray(checkpoint.arrays["equity"], dtype=np.float64)
        if account.shape != (4,) or walked.shape[0] != checkpoint.step:
            message = f"its account or equity curve does not match bar {checkpoint.step}"
            raise ValueError(message)
        equity = np.zeros(bar_count)
        equity[: checkpoint.step] = walked
        cash, shares, entry_value, fees = (float(v) for v in account)
        pnls = np.asarray(checkpoint.arrays["trade_pnls"], dtype=np.float64)
        return cls(
            index=checkpoint.step,
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


class BacktestRunner(CheckpointedRunner):
    """Runs backtest operations on this worker, with checkpoints and resume."""

    operation_type = OperationType.BACKTEST

    def _run(self, context: RunContext) -> RunOutcome:
        params = _parameters(context.parameters)
        try:
            bars = load_bars(
                csv_path=params.csv_path,
                count=params.bars,
                seed=params.seed,
                min_bars=params.slow_window + 1,
            )
        except BarsError as exc:
            raise RunFailed(str(exc)) from None
        fingerprint = {"parameters": params.model_dump(mode="json"), "bars": bars.fingerprint()}
        state = self._starting_state(context, params, fingerprint, len(bars))
        policy = self._checkpoints.bar_policy(clock=self._clock, start_step=state.index)
        fast = moving_average(bars.close, params.fast_window)
        slow = moving_average(bars.close, params.slow_window)
        close = bars.close.tolist()
        count = len(bars)
        every = max(1, count // _PROGRESS_STEPS)
        if context.resume:
            context.report_progress(_progress(state, count, f"resumed at bar {state.index}"))

        while state.index < count:
            reason = context.stop_requested()
            if reason is not None:
                return self._stopped(
                    context.operation_id,
                    step=state.index,
                    arrays=state.arrays(),
                    fingerprint=fingerprint,
                    where=f"bar {state.index}/{count}",
                    reason=reason,
                )
            index = state.index
            price = close[index]
            if index >= params.slow_window - 1:
                long_wanted = bool(fast[index] > slow[index])
                if long_wanted and state.shares == 0.0:
                    state.buy(price, params)
                elif not long_wanted and state.shares > 0.0:
                    state.sell(price, params)
            state.equity[index] = state.cash + state.shares * price
            state.index += 1
            if state.index % every == 0 and state.index < count:
                context.report_progress(_progress(state, count, f"bar {state.index}"))
            if state.index < count and policy.due(state.index):
                self._checkpoint_now(context.operation_id, state, fingerprint)
                policy.saved(state.index)

        if state.shares > 0.0:
            state.sell(close[-1], params)
            state.equity[-1] = state.cash
        context.report_progress(_progress(state, count, "done"))
        result = _result(state, params, count)
        return self._completed(context.operation_id, result)

    def _starting_state(
        self,
        context: RunContext,
        params: BacktestParameters,
        fingerprint: dict[str, Any],
        bar_count: int,
    ) -> _State:
        checkpoint = self._resume_from(context, fingerprint)
        if checkpoint is None:
            return _State.initial(capital=params.initial_capital, bar_count=bar_count)
        try:
            return _State.from_checkpoint(checkpoint, bar_count)
        except (KeyError, ValueError, TypeError) as exc:
            raise self._unusable(exc) from None

    def _checkpoint_now(
        self, operation_id: str, state: _State, fingerprint: dict[str, Any]
    ) -> None:
        self._save(operation_id, state.index, state.arrays(), fingerprint)


def _parameters(raw: Mapping[str, Any]) -> BacktestParameters:
    try:
        return BacktestParameters.model_validate(dict(raw))
    except ValidationError as exc:
        raise RunFailed(f"invalid backtest parameters: {describe_validation_error(exc)}") from None


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
