"""The event-loop lag probe: a task that sleeps a short interval again and again and records how late
each wake-up came, so operators see the stalls that delay every check, scrape and probe in the process."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge


class LoopLagProbe:
    """Sets `gauge` to the largest lag of the last `window_s` seconds (a sliding window, not reset by a
    scrape: two Prometheus servers, or a curl, must not take each other's maxima away).

    A maximum rather than a histogram: a stall is one late wake-up however long it lasts, so bucket counts
    would count stalls, not time lost, and the figure that matters (the issue's ≤ 50 ms, the alert's 1 s)
    is the longest one. Keep `window_s` at least one scrape interval so no stall falls between scrapes."""

    def __init__(self, gauge: Gauge, *, interval_s: float = 0.25, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if interval_s <= 0 or window_s < interval_s:
            raise ValueError("the probe needs interval_s > 0 and window_s >= interval_s")
        self.gauge, self.interval_s, self.window_s = gauge, interval_s, window_s
        self.clock, self.sleep = clock, sleep
        self._peaks: deque[tuple[float, float]] = deque()  # (when, lag), lags decreasing: the front is the max

    def record(self, lag_s: float, now: float) -> None:
        """Add one wake-up's lag; forget what left the window; publish the window's maximum."""
        while self._peaks and self._peaks[-1][1] <= lag_s:  # never the maximum again while this one is in
            self._peaks.pop()
        self._peaks.append((now, lag_s))
        while self._peaks[0][0] <= now - self.window_s:
            self._peaks.popleft()
        self.gauge.set(self._peaks[0][1])

    async def run_forever(self) -> None:
        while True:
            asleep = self.clock()
            await self.sleep(self.interval_s)
            now = self.clock()
            self.record(max(0.0, now - asleep - self.interval_s), now)
