"""Admission control for event streams: beyond the limit a new stream is refused at once.

A core that takes every stream it is offered makes all of them late once its
CPU is spent. Counting open streams and refusing the one over the limit with
RESOURCE_EXHAUSTED (reason OVER_CAPACITY, with a RetryInfo) keeps the admitted
streams on time and tells the caller to come back shortly, or to try another
replica. The limit is per process (`--max-streams`); 0 admits all. A new
stream takes its slot at once, before any work is done for it (before a job
starts) and before its first await, so a burst cannot slip past the limit;
the slot is held until the stream ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from server.errors import ResourceExhausted
from server.metrics import CoreMetrics

#: What a refused caller is told to wait before trying again, in seconds.
RETRY_AFTER_SECONDS = 1.0


class StreamAdmission:
    """Counts this process's open event streams against `limit` (0: unlimited)."""

    def __init__(self, limit: int = 0, metrics: CoreMetrics | None = None) -> None:
        self.limit = max(0, limit)
        self.open = 0
        self._refused = None if metrics is None else metrics.rate_limit_rejections.labels("streams")

    def check(self) -> None:
        """Raise ResourceExhausted (OVER_CAPACITY) when no stream slot is free."""
        if self.limit and self.open >= self.limit:
            if self._refused is not None:
                self._refused.inc()
            raise ResourceExhausted(
                f"this core serves its maximum of {self.limit} event streams; retry shortly",
                reason="OVER_CAPACITY",
                retry_after=RETRY_AFTER_SECONDS,
            )

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one stream slot for the `with` block; ResourceExhausted when none is free."""
        self.check()
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1
