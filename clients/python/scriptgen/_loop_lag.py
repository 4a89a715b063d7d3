"""How late a process's event loop runs what is due: a histogram of a timer's lateness.

Every stream of a core or a gateway shares one event loop. When its turns grow
long (the CPU is saturated, a burst of starts, a blocking call) every stream is
late, and no request metric says why. A timer set every INTERVAL_SECONDS
measures it: how long after its due time it ran is how long work due then
waited. Exported as `scriptgen_event_loop_lag_seconds` by the core and by each
gateway process; the alert `ScriptgenEventLoopLagHigh` watches its p99.

Twenty timer wake-ups a second cost a few microseconds each. uvloop's timers
have millisecond resolution, so an idle loop shows up to ~1 ms.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Histogram

#: How often the timer is set.
INTERVAL_SECONDS = 0.05
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
METRIC = "scriptgen_event_loop_lag_seconds"


def loop_lag_histogram(registry: CollectorRegistry) -> Histogram:
    """The lag histogram, in `registry`."""
    return Histogram(
        METRIC,
        "How late the event loop ran a timer set every 50 ms: the wait of work due then.",
        buckets=BUCKETS,
        registry=registry,
    )


class LoopLagMonitor:
    """Sets the timer on the running loop from `start()` until `stop()`."""

    def __init__(self, histogram: Histogram, interval_seconds: float = INTERVAL_SECONDS) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self._histogram = histogram
        self._interval = interval_seconds
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        """Whether the timer is set on a loop that has not closed."""
        return self._timer is not None and self._loop is not None and not self._loop.is_closed()

    def start(self) -> None:
        """Begin measuring the running loop: a no-op while it is measured already; a timer
        left on another loop (one closed without `stop()`, as a test's) is dropped."""
        loop = asyncio.get_running_loop()
        if self._timer is not None and self._loop is loop:
            return
        self.stop()
        self._set(loop)

    def stop(self) -> None:
        timer, loop, self._timer, self._loop = self._timer, self._loop, None, None
        if timer is not None and loop is not None and not loop.is_closed():
            timer.cancel()

    def _set(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = time.monotonic() + self._interval
        self._loop = loop
        self._timer = loop.call_later(self._interval, self._fired, loop)

    def _fired(self, loop: asyncio.AbstractEventLoop) -> None:
        self._histogram.observe(max(0.0, time.monotonic() - self._due))
        self._set(loop)
