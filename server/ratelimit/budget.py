"""A job's share of its tenant's daily token budget, counted as its text deltas are written.

Tokens are estimated from the text (about four characters each, at least one
per delta), the same for every provider. The job reserves them in blocks of
`BLOCK` from the shared count, so a delta costs a round trip to Redis only once
per block; what a job reserved but did not write is given back when it ends.
When the budget runs out mid-stream the delta that did not fit is not
appended and the job ends with `failed` RESOURCE_EXHAUSTED
(TOKEN_BUDGET_EXHAUSTED): the partial script is NOT saved as an episode; its
deltas stay readable in the job's event log for the retention period.

The UTC day counted is the limiter's (Redis's clock, with Redis), as for the other
limits: a core whose clock is off does not count into the wrong day. A budget
asks the limiter's clock once and keeps the difference from this process's
monotonic clock, so a step of the core's wall clock (NTP) mid-job does not move
the day either.
"""

from __future__ import annotations

import datetime
import time

from server.errors import ResourceExhausted
from server.ratelimit.base import Limiter

#: Tokens reserved from the shared count at a time.
BLOCK = 256


def estimate_tokens(text: str) -> int:
    """Tokens a delta of `text` counts for."""
    return max(1, (len(text) + 3) // 4)


def utc_day(now: datetime.datetime | None = None) -> str:
    """The UTC day a budget counts for, e.g. `2025-06-01`."""
    return (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d")


def seconds_to_midnight(now: datetime.datetime | None = None) -> float:
    """Seconds until the next UTC day, when budgets start over."""
    moment = now or datetime.datetime.now(datetime.UTC)
    tomorrow = (moment + datetime.timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return (tomorrow - moment).total_seconds()


def budget_exhausted(
    tenant: str, daily: int, now: datetime.datetime | None = None
) -> ResourceExhausted:
    return ResourceExhausted(
        f"tenant {tenant!r} used its daily budget of {daily} tokens; it starts over at 00:00 UTC",
        reason="TOKEN_BUDGET_EXHAUSTED",
        retry_after=max(1.0, seconds_to_midnight(now)),
    )


class TokenBudget:
    """Counts one job's tokens against its tenant's daily budget."""

    def __init__(self, limiter: Limiter, tenant: str, daily: int) -> None:
        self._limiter = limiter
        self.tenant = tenant
        self.daily = daily
        self._reserved = 0
        self._day = ""
        #: The limiter's clock minus this process's monotonic clock, in seconds (None: not
        #: asked yet).
        self._offset: float | None = None

    async def _now(self) -> datetime.datetime:
        """Now by the limiter's clock."""
        if self._offset is None:
            self._offset = await self._limiter.now() - time.monotonic()
        return datetime.datetime.fromtimestamp(time.monotonic() + self._offset, datetime.UTC)

    async def spend(self, tokens: int) -> None:
        """Count `tokens`; ResourceExhausted (TOKEN_BUDGET_EXHAUSTED) when they do not fit."""
        now = await self._now()
        day = utc_day(now)
        if day != self._day:
            await self.settle()
            self._day = day
        while self._reserved < tokens:
            wanted = max(BLOCK, tokens - self._reserved)
            granted = await self._limiter.reserve_tokens(self.tenant, day, wanted, self.daily)
            self._reserved += granted
            if granted < wanted and self._reserved < tokens:
                raise budget_exhausted(self.tenant, self.daily, now)
        self._reserved -= tokens

    async def settle(self) -> None:
        """Give back what was reserved and not written (when the job ends)."""
        if self._reserved and self._day:
            unused, self._reserved = self._reserved, 0
            await self._limiter.refund_tokens(self.tenant, self._day, unused)
