"""New jobs before old work: in a burst, every job is started before the pipelines run.

grpc.aio's server accepts one new call per turn of the event loop. In a burst the
pipelines of the jobs already started (their plan stages, their model requests)
fill every turn, so the calls still waiting are accepted ever more slowly: with
200 jobs arriving at once on the real provider path, the core accepted the last
of them 2.8 s after the first, although each start took ~6 ms (BENCHMARKS.md,
session 6). So a job's pipeline waits, before its plan stage, until no new job
has arrived for QUIET_SECONDS — at most MAX_DEFER_SECONDS, so that jobs arriving
without pause still run. A job arriving alone waits QUIET_SECONDS at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: No new job for this long ends a burst (starts come every ~1.5 ms in one).
QUIET_SECONDS = 0.01
#: The longest a job's pipeline waits for a burst to end.
MAX_DEFER_SECONDS = 0.5


class Arrivals:
    """When the last job arrived; pipelines wait for a pause in arrivals."""

    def __init__(
        self,
        quiet_seconds: float = QUIET_SECONDS,
        max_defer_seconds: float = MAX_DEFER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quiet = quiet_seconds
        self._max_defer = max_defer_seconds
        self._clock = clock
        self._last = float("-inf")

    def arrived(self) -> None:
        """A job is being started."""
        self._last = self._clock()

    async def settled(self) -> None:
        """Return once no job arrived for the quiet time, or the longest wait passed."""
        give_up = self._clock() + self._max_defer
        while True:
            now = self._clock()
            wait = min(self._last + self._quiet, give_up) - now
            if wait <= 0:
                return
            await asyncio.sleep(wait)
