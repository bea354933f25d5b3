"""A budget on listings: how many items per second all clients together may list.

Listing is the only read whose cost grows with the fleet or the table, so a client
listing everything in a tight loop could take the backend's time from heartbeats and
reports. Each listing spends the number of items it returns from a bucket that refills
at ``rate_per_s`` up to ``burst``. A listing is served while the bucket is above zero
(even one larger than the bucket: it leaves the bucket in debt), and refused with
:class:`~ktrdr.errors.ListingTooFrequent` (429 with ``Retry-After``) until the debt is
paid back. So a full list of any size is always possible, at most as often as the
rate allows. One budget per listing, shared by every client: it protects the backend,
not fairness between clients. Time is a monotonic clock passed in.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import attrs

from ktrdr.errors import ListingTooFrequent

__all__ = [
    "OPERATIONS_LIST_RATE",
    "WORKERS_LIST_RATE",
    "ListBudget",
    "ListBudgets",
    "ListingTooFrequent",
]

#: Workers listed per second, all clients together (two full lists/s at 10,000 workers).
WORKERS_LIST_RATE = 20_000
#: Operations listed per second, all clients together (25 full pages of 200 per second).
OPERATIONS_LIST_RATE = 5_000


class ListBudget:
    """Items per second for one listing; thread-safe (operations pages are read in threads)."""

    def __init__(
        self,
        *,
        what: str,
        rate_per_s: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0:
            message = f"expected a positive rate, got {rate_per_s}"
            raise ValueError(message)
        self.what = what
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst if burst is not None else rate_per_s)
        self._clock = clock
        self._level = self.burst
        self._at = clock()
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise :class:`ListingTooFrequent` if the budget is used up (nothing is spent)."""
        with self._lock:
            level = self._refill()
        if level > 0:
            return
        retry_after = max(1, math.ceil(-level / self.rate_per_s + 1e-9))
        message = (
            f"{self.what} listed too often: at most {self.rate_per_s:,.0f} {self.what} per "
            f"second for all clients together; retry after {retry_after} s, or ask for "
            "fewer (a page with ?limit=, or filters)"
        )
        raise ListingTooFrequent(message, retry_after_s=retry_after)

    def spend(self, items: int) -> None:
        """Take ``items`` (those just listed) from the budget; it may go into debt."""
        with self._lock:
            self._refill()
            self._level -= max(1, items)

    @property
    def level(self) -> float:
        """Items left now (negative: the debt to pay back before the next listing)."""
        with self._lock:
            return self._refill()

    def _refill(self) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._level = min(self.burst, self._level + elapsed * self.rate_per_s)
        return self._level


@attrs.frozen(kw_only=True)
class ListBudgets:
    """The backend's two budgets: workers and operations listings."""

    workers: ListBudget
    operations: ListBudget

    @classmethod
    def default(cls) -> ListBudgets:
        """:data:`WORKERS_LIST_RATE` and :data:`OPERATIONS_LIST_RATE` (one second of burst)."""
        return cls(
            workers=ListBudget(what="workers", rate_per_s=WORKERS_LIST_RATE),
            operations=ListBudget(what="operations", rate_per_s=OPERATIONS_LIST_RATE),
        )
