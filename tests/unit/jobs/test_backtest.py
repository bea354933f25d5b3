"""The backtest job: crossover trading with costs, metrics, stop and resume."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from job_helpers import FakeClock, Harness, run, store

from ktrdr.config import CheckpointSettings
from ktrdr.job_messages import CheckpointData, StopReason
from ktrdr.jobs.backtest import BacktestJob
from ktrdr.jobs.step_loop import Job, decode_state, encode_state
from ktrdr.protocol import OperationStatus, OperationType

PARAMS: dict[str, Any] = {"bars": 2000, "seed": 3, "fast_window": 5, "slow_window": 20}
OP = "bt-1"
JOB = BacktestJob()
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
    """A bars file whose bars all open, peak, bottom and close at ``closes``."""
    lines = ["open,high,low,close,volume"]
    lines += [f"{c},{c},{c},{c},1000" for c in closes]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_backtest_job_is_a_job_counting_bars() -> None:
    """BacktestJob is the Job of backtest operations; its step is a bar."""
    job: Job = JOB
    assert job.operation_type is OperationType.BACKTEST
    assert job.unit == "bar"


def test_checkpoint_every_reads_the_bar_interval() -> None:
    """``bar_interval`` (not ``epoch_interval``) sets the steps between checkpoints."""
    settings = CheckpointSettings(epoch_interval=4, bar_interval=7)
    assert JOB.checkpoint_every(settings) == 7


def test_backtest_completes_with_metrics(tmp_path: Path) -> None:
    """A run completes with every metric, consistent with each other."""
    outcome = run(JOB, tmp_path, OP, PARAMS)
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
    parameters = {"bars": 100, "fast_window": 2, "slow_window": 4, "csv_path": path.name}
    free = run(JOB, tmp_path, OP, {**parameters, "commission": 0, "slippage": 0}).result
    assert free is not None
    assert free["trade_count"] == 1
    assert free["win_rate"] == 1.0
    assert free["fees_paid"] == 0.0
    assert free["final_equity"] == pytest.approx(10_000 * 13 / 12)
    assert free["max_drawdown"] == pytest.approx(1 - 13 / 16)

    costly = run(JOB, tmp_path, OP, {**parameters, "commission": 0.01, "slippage": 0.02})
    assert costly.result is not None
    buy = 12 * 1.02 * 1.01
    sell = 13 * 0.98 * 0.99
    assert costly.result["final_equity"] == pytest.approx(10_000 * sell / buy)
    fees = 10_000 / buy * 12 * 1.02 * 0.01 + 10_000 / buy * 13 * 0.98 * 0.01
    assert costly.result["fees_paid"] == pytest.approx(fees)


def test_costs_reduce_the_return(tmp_path: Path) -> None:
    """Commission and slippage both lower the final equity and are accounted as fees."""
    free = run(JOB, tmp_path, OP, {**PARAMS, "commission": 0, "slippage": 0}).result
    commission = run(JOB, tmp_path, OP, {**PARAMS, "commission": 0.01, "slippage": 0}).result
    slippage = run(JOB, tmp_path, OP, {**PARAMS, "commission": 0, "slippage": 0.01}).result
    assert free is not None
    assert commission is not None
    assert slippage is not None
    assert commission["final_equity"] < free["final_equity"]
    assert slippage["final_equity"] < free["final_equity"]
    assert free["fees_paid"] == 0.0
    assert commission["fees_paid"] > 0


def test_bars_per_year_scales_sharpe(tmp_path: Path) -> None:
    """The Sharpe ratio is annualised with ``bars_per_year``."""
    daily = run(JOB, tmp_path, OP, PARAMS).result
    yearly = run(JOB, tmp_path, OP, {**PARAMS, "bars_per_year": 1}).result
    assert daily is not None
    assert yearly is not None
    assert daily["sharpe"] == pytest.approx(yearly["sharpe"] * 252**0.5)


def test_backtest_is_deterministic(tmp_path: Path) -> None:
    """Two runs with the same parameters give the same result; another seed does not."""
    first = run(JOB, tmp_path, OP, PARAMS).result
    again = run(JOB, tmp_path, OP, PARAMS).result
    other = run(JOB, tmp_path, OP, {**PARAMS, "seed": 4}).result
    assert first == again
    assert first != other


def test_progress_carries_bar_and_equity(tmp_path: Path) -> None:
    """About 100 progress reports, with bar, bars, equity and trades, ending at 100%."""
    harness = Harness()
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=harness)
    assert outcome.result is not None
    reports = harness.progress_reports
    assert len(reports) == 100
    assert reports[0].details["bar"] == 20
    assert reports[0].percent == 1.0
    last = reports[-1]
    assert last.percent == 100.0
    assert last.details["equity"] == outcome.result["final_equity"]
    assert last.details["trades"] == outcome.result["trade_count"]


@pytest.mark.parametrize("reason", [StopReason.SHUTDOWN, StopReason.CANCELLED])
def test_stop_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, reason: StopReason
) -> None:
    """Stopped at bar 777: checkpoint saved, CANCELLED; resumed: the uninterrupted result."""
    uninterrupted = run(JOB, tmp_path / "a", OP, PARAMS)
    work = tmp_path / "b"
    stopped = run(JOB, work, OP, PARAMS, harness=Harness(stop_after=777, reason=reason))
    assert stopped.status is OperationStatus.CANCELLED
    assert stopped.checkpoint_saved is True
    assert stopped.error == f"checkpoint saved at bar 777/2000 ({reason.value})"
    assert store(work).load(OP, kind="backtest").step == 777

    harness = Harness()
    resumed = run(JOB, work, OP, PARAMS, resume=True, harness=harness)
    assert resumed.status is OperationStatus.COMPLETED, resumed.error
    assert resumed.result == uninterrupted.result
    assert harness.progress_reports[0].message == "resumed at bar 777"
    assert store(work).exists(OP)  # until the backend acknowledges the outcome


@pytest.mark.parametrize("stop_at", [0, 19, 20, 21, 500, 1999])
def test_stop_anywhere_resumes_exactly(tmp_path: Path, stop_at: int) -> None:
    """Interruptions at many bars (in and out of positions) all resume to the same result."""
    uninterrupted = run(JOB, tmp_path / "a", OP, PARAMS)
    work = tmp_path / "b"
    run(JOB, work, OP, PARAMS, harness=Harness(stop_after=stop_at))
    resumed = run(JOB, work, OP, PARAMS, resume=True)
    assert resumed.result == uninterrupted.result


def test_fresh_run_discards_a_stale_checkpoint(tmp_path: Path) -> None:
    """Starting without resume removes an old checkpoint instead of continuing from it."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=500))
    assert store(tmp_path).exists(OP)
    harness = Harness(stop_after=100)
    present: list[bool] = []
    harness.on_poll = lambda _: present.append(store(tmp_path).exists(OP))
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=harness)
    assert present[0] is False
    assert outcome.error == "checkpoint saved at bar 100/2000 (shutdown)"


def crash_at(bar: int) -> Callable[[int], None]:
    """A poll hook that raises at the poll before bar ``bar`` (a job crashing there)."""

    def poll(polls: int) -> None:
        if polls == bar + 1:
            raise RuntimeError("disk vanished")

    return poll


@pytest.mark.parametrize(("interval", "expected"), [(500, 1000), (300, 1200)])
def test_bar_interval_sets_when_periodic_checkpoints_are_written(
    tmp_path: Path, interval: int, expected: int
) -> None:
    """After a crash at bar 1234 the checkpoint on disk is the last multiple of bar_interval."""
    harness = Harness()
    harness.on_poll = crash_at(1234)
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=harness, bar_interval=interval)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == "backtest failed unexpectedly: RuntimeError: disk vanished"
    assert store(tmp_path).load(OP, kind="backtest").step == expected


def test_time_interval_triggers_backtest_checkpoints(tmp_path: Path) -> None:
    """With one second per bar and a 400 s interval, checkpoints land every 400 bars."""
    clock = FakeClock()
    harness = Harness()
    crash = crash_at(1234)

    def poll(polls: int) -> None:
        clock.now += 1.0
        crash(polls)

    harness.on_poll = poll
    run(
        JOB,
        tmp_path,
        OP,
        PARAMS,
        harness=harness,
        clock=clock,
        time_interval=datetime.timedelta(seconds=400),
    )
    assert [c.step for c in harness.checkpoints] == [400, 800, 1200]
    assert store(tmp_path).load(OP, kind="backtest").step == 1200


def test_resume_without_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """Resuming a backtest that has no checkpoint is FAILED with the reason."""
    outcome = run(JOB, tmp_path, OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith("cannot resume: no checkpoint for operation bt-1")


def test_resume_from_garbage_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """A garbage checkpoint file makes resume FAILED with 'corrupt'."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=50))
    path = store(tmp_path).path_for(OP)
    path.write_bytes(b"\x00not a zip\x00" * 20)
    outcome = run(JOB, tmp_path, OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot resume: checkpoint {path} is corrupt")


def test_resume_with_inconsistent_state_fails_clearly(tmp_path: Path) -> None:
    """A checkpoint whose equity curve does not fit its bar index is refused."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=50))
    checkpoints = store(tmp_path)
    good = checkpoints.load(OP, kind="backtest")
    arrays = decode_state(good.state)
    arrays["equity"] = arrays["equity"][:10]
    bad = CheckpointData(step=50, meta=good.meta, state=encode_state(arrays))
    checkpoints.save(OP, kind="backtest", data=bad)
    outcome = run(JOB, tmp_path, OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == (
        "cannot resume: the checkpoint's backtest state is unusable "
        "(its account or equity curve does not match bar 50)"
    )


def test_resume_with_other_parameters_fails_clearly(tmp_path: Path) -> None:
    """A checkpoint written for other parameters is not silently reused."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=50))
    outcome = run(JOB, tmp_path, OP, {**PARAMS, "commission": 0.002}, resume=True)
    assert outcome.status is OperationStatus.FAILED
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
    outcome = run(JOB, tmp_path, OP, parameters)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(expected)


def test_bad_csv_row_fails_naming_the_line(tmp_path: Path) -> None:
    """A malformed CSV ends as FAILED naming the line and column, not the value."""
    path = tmp_path / "bars.csv"
    path.write_text("open,high,low,close,volume\n1,1,1,1,1\n1,1,1,x,1\n")
    outcome = run(JOB, tmp_path, OP, {**PARAMS, "csv_path": "bars.csv"})
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == "bars file bars.csv, line 3, column 4 (close): not a number"


def test_unwritable_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """When the checkpoint cannot be written, the outcome is FAILED naming the file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the directory should be")
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=2), dir=blocker)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot write checkpoint {blocker / OP / 'checkpoint.zip'}")


def test_the_equity_curve_is_down_sampled_to_the_cap_and_ends_at_the_final_equity(
    tmp_path: Path,
) -> None:
    """2,000 bars give 1,000 equity points (every second bar), the last one the final equity."""
    harness = Harness()
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=harness)
    assert outcome.result is not None
    equity = harness.points()["equity"]
    assert len(equity) == 1000
    assert [x for x, _ in equity[:3]] == [2, 4, 6]
    assert equity[-1] == (2000, outcome.result["final_equity"])
