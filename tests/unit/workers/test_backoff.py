"""Capped exponential backoff: doubling delays, a cap, jitter, reset."""

from __future__ import annotations

import datetime

import pytest

from ktrdr.workers.backoff import Backoff, registration_backoff


def _ms(value: float) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=value)


def test_delays_double_up_to_the_cap() -> None:
    """Without jitter (random=1.0) the delays are 0.1, 0.2, 0.4, 0.8, then the 1 s cap."""
    backoff = Backoff(initial=_ms(100), cap=_ms(1000), random=lambda: 1.0)

    delays = [backoff.next_delay() for _ in range(7)]

    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_jitter_scales_each_delay_into_its_upper_half() -> None:
    """random=0 gives half the nominal delay: retries of a fleet spread out."""
    backoff = Backoff(initial=_ms(100), cap=_ms(1000), random=lambda: 0.0)

    assert [backoff.next_delay() for _ in range(3)] == pytest.approx([0.05, 0.1, 0.2])


def test_reset_starts_again_from_the_initial_delay() -> None:
    """After reset() the next delay is the initial one again."""
    backoff = Backoff(initial=_ms(100), cap=_ms(1000), random=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()

    assert backoff.next_delay() == pytest.approx(0.1)


@pytest.mark.parametrize(("heartbeat_s", "cap_s"), [(0.2, 1.0), (10.0, 10.0), (120.0, 30.0)])
def test_registration_backoff_is_capped_by_the_heartbeat_interval(
    heartbeat_s: float, cap_s: float
) -> None:
    """Registration retries are capped at the heartbeat interval, within [1 s, 30 s]."""
    backoff = registration_backoff(datetime.timedelta(seconds=heartbeat_s), random=lambda: 1.0)

    delays = [backoff.next_delay() for _ in range(20)]

    assert delays[0] == pytest.approx(0.1)
    assert max(delays) == pytest.approx(cap_s)
