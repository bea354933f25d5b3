"""Series sampling: at most MAX_SERIES_POINTS points a series, the same steps on every run."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from ktrdr.jobs.series import SeriesRecorder, sample_stride, sampled_steps
from ktrdr.protocol import MAX_SERIES_POINTS


@given(st.integers(min_value=1, max_value=3_000_000))
def test_a_run_of_any_length_gives_at_most_the_cap_ending_at_its_last_step(total: int) -> None:
    """Sampled steps ascend, end at ``total``, number at most MAX_SERIES_POINTS."""
    steps = list(sampled_steps(total))
    assert 1 <= len(steps) <= MAX_SERIES_POINTS
    assert steps[-1] == total
    assert steps == sorted(set(steps))
    recorder = SeriesRecorder(total)
    assert [s for s in steps if recorder.is_sampled(s)] == steps


@given(st.integers(min_value=1, max_value=MAX_SERIES_POINTS))
def test_a_short_run_keeps_every_step(total: int) -> None:
    """Up to MAX_SERIES_POINTS steps (every default training), nothing is dropped."""
    assert list(sampled_steps(total)) == list(range(1, total + 1))


@given(st.integers(min_value=1, max_value=200_000), st.integers(min_value=0, max_value=200_000))
def test_the_steps_before_a_resume_are_a_prefix_of_the_whole_run(total: int, through: int) -> None:
    """Replaying up to a checkpoint picks exactly the steps an uninterrupted run sampled there."""
    whole = list(sampled_steps(total))
    assert list(sampled_steps(total, through=through)) == [s for s in whole if s <= through]


def test_a_million_bars_sample_every_thousandth() -> None:
    """1,000,000 bars: every 1,000th bar, the last one included, 1,000 points."""
    assert sample_stride(1_000_000) == 1000
    steps = list(sampled_steps(1_000_000))
    assert (len(steps), steps[0], steps[-1]) == (1000, 1000, 1_000_000)


def test_values_that_are_not_finite_are_left_out() -> None:
    """NaN and infinity never reach a series (JSON has neither)."""
    recorder = SeriesRecorder(3)
    recorder.record(1, {"loss": 0.5, "gap": math.nan})
    recorder.record(2, {"loss": math.inf, "gap": 1.0})
    update = recorder.take()
    assert update is not None
    assert dict(update.points) == {"loss": ((1, 0.5),), "gap": ((2, 1.0),)}
    assert recorder.take() is None
