"""Retry timing before the first token: exponential backoff, full jitter, Retry-After honoured."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts on one provider."""

    base_seconds: float = 0.5
    max_seconds: float = 20.0

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 0).

        Full jitter spreads a burst of callers out; a provider's Retry-After is a
        floor, capped at `max_seconds` so a silly value cannot stall the job.
        """
        ceiling = min(self.max_seconds, self.base_seconds * (2**attempt))
        jittered = (rng or random).uniform(0.0, ceiling)
        if retry_after is not None:
            jittered = max(jittered, retry_after)
        return min(jittered, self.max_seconds)
