"""Failed dashboard sign-ins, limited per client address (with the ``limits`` package).

Each wrong operator token sent to ``/ui/login`` counts against the address it came
from. After :data:`FAILED_SIGN_INS` failures within a moving window, every sign-in
from that address, right or wrong, is answered 429 with ``Retry-After`` (the token is
not even compared) until the oldest failure leaves the window. So guessing the token
through the dashboard costs minutes per handful of tries, and the "sign-in refused"
warnings an attacker can cause are bounded. Other addresses are not affected, and the
API's bearer token check is not involved (its tokens are never typed by people).

Behind a reverse proxy every client has the proxy's address unless uvicorn is told to
trust its ``X-Forwarded-For`` (``--forwarded-allow-ips``): then one client's failures
throttle all; docs/dashboard.md says so. The counts live in this process's memory (a
restart forgets them), which ``limits``' in-memory storage expires by itself.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

__all__ = ["FAILED_SIGN_INS", "SignInThrottle"]

#: Wrong tokens one address may send before its sign-ins are refused for a while.
FAILED_SIGN_INS = "10/minute"


class SignInThrottle:
    """Counts failed sign-ins by client address; says how long one must wait."""

    def __init__(self, limit: str = FAILED_SIGN_INS) -> None:
        self._limit: RateLimitItem = parse(limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @property
    def limit(self) -> str:
        """The limit in words, e.g. ``10 per 1 minute``."""
        return str(self._limit)

    def retry_after(self, client: str) -> int | None:
        """Seconds ``client`` must wait before signing in again, or None if it may now."""
        if self._limiter.test(self._limit, client):
            return None
        reset_at = self._limiter.get_window_stats(self._limit, client).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def failed(self, client: str) -> None:
        """``client`` sent a wrong token."""
        self._limiter.hit(self._limit, client)
