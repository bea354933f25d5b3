"""The backtest runner: crossover trading with costs, metrics, stop and resume."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import FakeClock, Harness, make_runner, run

from ktrdr.protocol import OperationStatus, OperationType
from ktrdr.workers.backtest import BacktestRunner
from ktrdr.workers.runner import OperationRunner, StopReason

PARAMS: dict[str, Any] = {"bars": 2000, "seed": 3, "fast_window": 5, "slow_window": 20}
OP = "bt-1"
RESULT_KEYS = {
    "symbol",
    "bars",
    "initial_capital",
    "final_equity",
    "total_return",
    "sharpe",
    "max_drawdown",
    "win_rate",
    "trade_count",
    "fees_paid",
}


def write_csv(path: Path, closes: list[float]) -> Path:
    lines = ["open,high,low,close,volume"]
    lines += [f"{c},{c},{c},{c},1000" for c in closes]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_runner_satisfies_the_runner_protocol(tmp_path: Path) -> None:
    """BacktestRunner is an OperationRunner for backtest operations."""
    runner: OperationRunner = make_runner(BacktestRunner, tmp_path)
    assert runner.operation_type is OperationType.BACKTEST


def test_backtest_completes_with_metrics(tmp_path: Path) -> None:
    """A run completes with every metric, consistent with each other."""
    outcome = run(make_runner(BacktestRunner, tmp_path), OP, PARAMS)
    assert outcome.status is OperationStatus.COMPLETED, outcome.error
    result = outcome.result
    assert result is not None
    assert set(result) == RESULT_KEYS
    assert result["bars"] == 2000
    assert result["trade_count"] > 10
    assert result["total_return"] == pytest.approx(result["final_equity"] / 10_000 - 1)
    assert 0.0 <= result["max_drawdown"] < 1.0
    assert 0.0 <= result["win_rate"] <= 1.0
    assert result["fees_paid"] > 0


def test_known_prices_give_known_trades(tmp_path: Path) -> None:
    """A hand-made path: one buy at 12 on the upward cross, one sell at 13 on the way down."""
    closes = [10.0] * 90 + [12.0, 14.0, 16.0, 15.0, 13.0, 11.0] + [10.0] * 4
    path = write_csv(tmp_path / "bars.csv", closes)
    parameters = {"bars": 100, "fast_window": 2, "slow_window": 4, "csv_path": str(path)}
    free = run(
        make_runner(BacktestRunner, tmp_path), OP, {**parameters, "commission": 0, "slippage": 0}
    ).result
    assert free is not None
    assert free["trade_count"] == 1
    assert free["win_rate"] == 1.0
    assert free["fees_paid"] == 0.0
    assert free["final_equity"] == pytest.approx(10_000 * 13 / 12)
    assert free["max_drawdown"] == pytest.approx(1 - 13 / 16)

    costly = run(
        make_runner(BacktestRunner, tmp_path),
        OP,
        {**parameters, "commission": 0.01, "slippage": 0.02},
    )
    assert costly.result is not None
    buy = 12 * 1.02 * 1.01
    sell = 13 * 0.98 * 0.99
    assert costly.result["final_equity"] == pytest.approx(10_000 * sell / buy)
    fees = 10_000 / buy * 12 * 1.02 * 0.01 + 10_000 / buy * 13 * 0.98 * 0.01
    assert costly.result["fees_paid"] == pytest.approx(fees)


def test_costs_reduce_the_return(tmp_path: Path) -> None:
    """Commission and slippage both lower the final equity and are accounted as fees."""
    free = run(
        make_runner(BacktestRunner, tmp_path), OP, {**PARAMS, "commission": 0, "slippage": 0}
    ).result
    commission = run(
        make_runner(BacktestRunner, tmp_path), OP, {**PARAMS, "commission": 0.01, "slippage": 0}
    ).result
    slippage = run(
        make_runner(BacktestRunner, tmp_path), OP, {**PARAMS, "commission": 0, "slippage": 0.01}
    ).result
    assert free is not None
    assert commission is not None
    assert slippage is not None
    assert commission["final_equity"] < free["final_equity"]
    assert slippage["final_equity"] < free["final_equity"]
    assert free["fees_paid"] == 0.0
    assert commission["fees_paid"] > 0


def test_bars_per_year_scales_sharpe(tmp_path: Path) -> None:
    """The Sharpe ratio is annualised with ``bars_per_year``."""
    daily = run(make_runner(BacktestRunner, tmp_path), OP, PARAMS).result
    yearly = run(make_runner(BacktestRunner, tmp_path), OP, {**PARAMS, "bars_per_year": 1}).result
    assert daily is not None
    assert yearly is not None
    assert daily["sharpe"] == pytest.approx(yearly["sharpe"] * 252**0.5)


def test_progress_carries_bar_and_equity(tmp_path: Path) -> None:
    """About 100 progress reports, with bar, bars, equity and trades, ending at 100%."""
    harness = Harness()
    outcome = make_runner(BacktestRunner, tmp_path).run(harness.context(OP, PARAMS))
    assert outcome.result is not None
    assert len(harness.progress) == 100
    assert harness.progress[0].details["bar"] == 20
    assert harness.progress[0].percent == 1.0
    last = harness.progress[-1]
    assert last.percent == 100.0
    assert last.details["equity"] == outcome.result["final_equity"]
    assert last.details["trades"] == outcome.result["trade_count"]


@pytest.mark.parametrize("reason", [StopReason.SHUTDOWN, StopReason.CANCELLED])
def test_stop_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, reason: StopReason
) -> None:
    """Stopped at bar 777: checkpoint saved, CANCELLED; resumed: the uninterrupted result."""
    uninterrupted = run(make_runner(BacktestRunner, tmp_path / "a"), OP, PARAMS)
    runner = make_runner(BacktestRunner, tmp_path / "b")
    stopped = runner.run(Harness(stop_after=777, reason=reason).context(OP, PARAMS))
    assert stopped.status is OperationStatus.CANCELLED
    assert stopped.checkpoint_saved is True
    assert stopped.error == f"checkpoint saved at bar 777/2000 ({reason.value})"
    assert runner.checkpoints.load(OP, kind="backtest").step == 777

    harness = Harness()
    resumed = runner.run(harness.context(OP, PARAMS, resume=True))
    assert resumed.status is OperationStatus.COMPLETED, resumed.error
    assert resumed.result == uninterrupted.result
    assert harness.progress[0].message == "resumed at bar 777"
    assert not runner.checkpoints.exists(OP)


def test_stop_while_holding_a_position_resumes_exactly(tmp_path: Path) -> None:
    """Interruptions at many bars (in and out of positions) all resume to the same result."""
    uninterrupted = run(make_runner(BacktestRunner, tmp_path / "a"), OP, PARAMS)
    for stop_at in (0, 19, 20, 21, 500, 1999):
        runner = make_runner(BacktestRunner, tmp_path / str(stop_at))
        runner.run(Harness(stop_after=stop_at).context(OP, PARAMS))
        resumed = runner.run(Harness().context(OP, PARAMS, resume=True))
        assert resumed.result == uninterrupted.result, stop_at


def crash_at(bar: int) -> Callable[[int], None]:
    def poll(polls: int) -> None:
        if polls == bar + 1:
            raise RuntimeError("disk vanished")

    return poll


def test_bar_interval_sets_when_periodic_checkpoints_are_written(tmp_path: Path) -> None:
    """After a crash at bar 1234 the checkpoint on disk is the last multiple of bar_interval."""
    for interval, expected in ((500, 1000), (300, 1200)):
        runner = make_runner(BacktestRunner, tmp_path / str(interval), bar_interval=interval)
        harness = Harness()
        harness.on_poll = crash_at(1234)
        outcome = runner.run(harness.context(OP, PARAMS))
        assert outcome.status is OperationStatus.FAILED
        assert outcome.error == "backtest failed unexpectedly: RuntimeError: disk vanished"
        assert runner.checkpoints.load(OP, kind="backtest").step == expected


def test_time_interval_triggers_backtest_checkpoints(tmp_path: Path) -> None:
    """With one second per bar and a 400 s interval, checkpoints land every 400 bars."""
    clock = FakeClock()
    runner = make_runner(
        BacktestRunner, tmp_path, clock=clock, time_interval=datetime.timedelta(seconds=400)
    )
    harness = Harness()

    def poll(polls: int) -> None:
        clock.now += 1.0
        crash_at(1234)(polls)

    harness.on_poll = poll
    runner.run(harness.context(OP, PARAMS))
    assert runner.checkpoints.load(OP, kind="backtest").step == 1200


def test_resume_without_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """Resuming a backtest that has no checkpoint is FAILED with the reason."""
    outcome = run(make_runner(BacktestRunner, tmp_path), OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith("cannot resume: no checkpoint for operation bt-1")


def test_resume_from_garbage_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """A garbage checkpoint file makes resume FAILED with 'corrupt'."""
    runner = make_runner(BacktestRunner, tmp_path)
    runner.run(Harness(stop_after=50).context(OP, PARAMS))
    runner.checkpoints.path_for(OP).write_bytes(b"\x00not a zip\x00" * 20)
    outcome = run(runner, OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert "corrupt" in outcome.error


def test_resume_with_inconsistent_state_fails_clearly(tmp_path: Path) -> None:
    """A checkpoint whose equity curve does not fit its bar index is refused."""
    runner = make_runner(BacktestRunner, tmp_path)
    runner.run(Harness(stop_after=50).context(OP, PARAMS))
    good = runner.checkpoints.load(OP, kind="backtest")
    arrays = dict(good.arrays)
    arrays["equity"] = arrays["equity"][:10]
    runner.checkpoints.save(OP, kind="backtest", step=50, meta=good.meta, arrays=arrays)
    outcome = run(runner, OP, PARAMS, resume=True)
    assert outcome.error == (
        "cannot resume: the checkpoint's backtest state is unusable "
        "(its account or equity curve does not match bar 50)"
    )


def test_resume_with_other_parameters_fails_clearly(tmp_path: Path) -> None:
    """A checkpoint written for other parameters is not silently reused."""
    runner = make_runner(BacktestRunner, tmp_path)
    runner.run(Harness(stop_after=50).context(OP, PARAMS))
    outcome = run(runner, OP, {**PARAMS, "commission": 0.002}, resume=True)
    assert outcome.error is not None
    assert outcome.error.endswith("was written for other parameters or bars")


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (
            {"fast_window": 30, "slow_window": 10},
            "invalid backtest parameters: fast_window (30) must be smaller than slow_window (10)",
        ),
        ({"commission": -0.1}, "invalid backtest parameters: commission: Input should be"),
        ({"initial_capital": 0}, "invalid backtest parameters: initial_capital: Input should be"),
        ({"slippage": "lots"}, "invalid backtest parameters: slippage: Input should be a valid"),
    ],
)
def test_bad_parameters_fail_with_the_problem_named(
    tmp_path: Path, parameters: dict[str, Any], expected: str
) -> None:
    """Invalid parameters end as FAILED with the problem, never an exception."""
    outcome = run(make_runner(BacktestRunner, tmp_path), OP, parameters)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(expected)


def test_bad_csv_row_fails_naming_the_line(tmp_path: Path) -> None:
    """A malformed CSV ends as FAILED naming the line and field."""
    path = tmp_path / "bars.csv"
    path.write_text("open,high,low,close,volume\n1,1,1,1,1\n1,1,1,x,1\n")
    outcome = run(make_runner(BacktestRunner, tmp_path), OP, {**PARAMS, "csv_path": str(path)})
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == f"bars file {path}, line 3: close 'x' is not a number"
