"""How long an in-memory core keeps finished jobs: by age and by count, oldest end first.

The in-memory event log and job registry each keep one `FinishedJobs`; a job
is dropped `seconds` after it ended, or earlier once `count` newer jobs have
ended — whichever comes first — so memory stays bounded however many jobs
a core runs. Running jobs are never dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Finished jobs an in-memory core keeps by default (see README, "Retention").
DEFAULT_FINISHED_JOBS_KEPT = 500


@dataclass(frozen=True, slots=True)
class Retention:
    """Keep a finished job at most `seconds` after its end, and at most `count` of them."""

    seconds: float = 24 * 3600.0
    count: int = DEFAULT_FINISHED_JOBS_KEPT


class FinishedJobs:
    """Names of finished jobs in the order they ended; says which ones to drop."""

    def __init__(self, retention: Retention, clock: Callable[[], float] = time.monotonic) -> None:
        self._retention = retention
        self._clock = clock
        self._ended: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ended)

    def ended(self, name: str) -> list[str]:
        """Record that `name` ended now; the names to drop (possibly `name` itself)."""
        self._ended.pop(name, None)
        self._ended[name] = self._clock()
        return self.expired()

    def forget(self, name: str) -> None:
        """`name` was dropped by other means."""
        self._ended.pop(name, None)

    def expired(self) -> list[str]:
        """Remove and return the names past their age, then the oldest beyond the count."""
        dropped: list[str] = []
        oldest_kept = self._clock() - self._retention.seconds
        while self._ended:
            name, ended_at = next(iter(self._ended.items()))
            if ended_at > oldest_kept and len(self._ended) <= max(0, self._retention.count):
                break
            del self._ended[name]
            dropped.append(name)
        return dropped
