"""Per-analyst query limit over a sliding hour (policy key ``max_queries_per_hour``).

Sliding rather than fixed windows: an analyst cannot double the rate by straddling the top of
the hour. The clock is injected (``time.monotonic`` by default) so tests need no sleeping, and
wall-clock jumps (NTP, daylight saving) do not reopen the window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from site_agent.errors import PolicyRefusal

WINDOW_SECONDS = 3600.0


class RateLimiter:
    """Admits at most ``limit`` queries per analyst in any ``window`` seconds at site ``site``."""

    def __init__(
        self,
        site: str,
        limit: int,
        clock: Callable[[], float] = time.monotonic,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self.site = site
        self.limit = limit
        self.window = window
        self._clock = clock
        self._times: dict[str, deque[float]] = {}

    def _recent(self, analyst: str, now: float) -> deque[float]:
        times = self._times.setdefault(analyst, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def remaining(self, analyst: str) -> int:
        """How many more queries ``analyst`` may send right now."""
        return max(0, self.limit - len(self._recent(analyst, self._clock())))

    def acquire(self, analyst: str) -> None:
        """Count one query for ``analyst``, or refuse it (rule ``max_queries_per_hour``)."""
        now = self._clock()
        times = self._recent(analyst, now)
        if len(times) >= self.limit:
            wait = times[0] + self.window - now if times else self.window
            raise PolicyRefusal(
                self.site,
                "max_queries_per_hour",
                f"analyst {analyst!r} reached {self.limit} queries in the last hour; retry in {wait:.0f} s",
            )
        times.append(now)
