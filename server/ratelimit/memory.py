"""The in-memory limiter: one core's counts, the embedded default."""

from __future__ import annotations

import math
import time

from server.ratelimit.base import Decision

#: Buckets untouched this long are forgotten (they are full again anyway).
_IDLE_BUCKETS_AFTER = 3600.0


class MemoryLimiter:
    """Token buckets, stream leases and daily token counts in dicts."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._streams: dict[str, dict[str, float]] = {}
        self._tokens: dict[tuple[str, str], int] = {}

    async def hit(self, key: str, limit: int, window_seconds: float) -> Decision:
        now = time.monotonic()
        rate = limit / window_seconds
        tokens, last = self._buckets.get(key, (float(limit), now))
        tokens = min(float(limit), tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > 10_000:
            self._buckets = {
                k: v for k, v in self._buckets.items() if now - v[1] < _IDLE_BUCKETS_AFTER
            }
        return Decision(
            allowed=allowed,
            limit=limit,
            remaining=math.floor(tokens),
            reset_seconds=(limit - tokens) / rate,
            retry_after_seconds=0.0 if allowed else (1.0 - tokens) / rate,
        )

    async def open_stream(self, tenant: str, stream: str, limit: int, lease_seconds: float) -> bool:
        now = time.monotonic()
        open_now = {s: t for s, t in self._streams.get(tenant, {}).items() if t > now}
        if len(open_now) >= limit:
            self._streams[tenant] = open_now
            return False
        open_now[stream] = now + lease_seconds
        self._streams[tenant] = open_now
        return True

    async def renew_stream(self, tenant: str, stream: str, lease_seconds: float) -> None:
        streams = self._streams.get(tenant)
        if streams is not None and stream in streams:
            streams[stream] = time.monotonic() + lease_seconds

    async def close_stream(self, tenant: str, stream: str) -> None:
        streams = self._streams.get(tenant)
        if streams is not None:
            streams.pop(stream, None)
            if not streams:
                del self._streams[tenant]

    async def reserve_tokens(self, tenant: str, day: str, wanted: int, budget: int) -> int:
        used = self._tokens.get((tenant, day), 0)
        granted = max(0, min(wanted, budget - used))
        if granted:
            # Only today's counts matter; drop other days as a new one starts.
            self._tokens = {k: v for k, v in self._tokens.items() if k[1] == day}
            self._tokens[(tenant, day)] = used + granted
        return granted

    async def refund_tokens(self, tenant: str, day: str, unused: int) -> None:
        key = (tenant, day)
        if key in self._tokens:
            self._tokens[key] = max(0, self._tokens[key] - unused)

    async def tokens_used(self, tenant: str, day: str) -> int:
        return self._tokens.get((tenant, day), 0)

    async def now(self) -> float:
        return time.time()
