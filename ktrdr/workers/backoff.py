"""Capped exponential backoff with jitter, for retrying calls to the backend.

A pure value object: it computes delays and never sleeps, so callers inject their
own sleep and tests check the sequence directly.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable

import attrs


@attrs.define(kw_only=True)
class Backoff:
    """Delays ``initial``, ``2*initial``, ... up to ``cap``, each scaled by a jitter in [0.5, 1].

    Jitter spreads the retries of a fleet that lost the backend at the same moment,
    so they do not all hit it again in the same instant when it comes back.
    """

    initial: datetime.timedelta
    cap: datetime.timedelta
    #: Returns a float in [0, 1); injectable so tests get exact delays.
    random: Callable[[], float] = random.random
    attempts: int = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; advances the sequence."""
        base = min(self.cap.total_seconds(), self.initial.total_seconds() * 2.0**self.attempts)
        if base < self.cap.total_seconds():
            self.attempts += 1
        jitter: float = self.random()
        return base * (0.5 + 0.5 * jitter)

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempts = 0


def registration_backoff(
    heartbeat_interval: datetime.timedelta, *, random: Callable[[], float] = random.random
) -> Backoff:
    """The worker's registration backoff: 100 ms doubling, capped at the heartbeat
    interval (at least 1 s, at most 30 s), so a backend that comes up late is found
    within about one heartbeat interval.
    """
    cap = min(
        datetime.timedelta(seconds=30), max(datetime.timedelta(seconds=1), heartbeat_interval)
    )
    return Backoff(initial=datetime.timedelta(milliseconds=100), cap=cap, random=random)


__all__ = ["Backoff", "registration_backoff"]
