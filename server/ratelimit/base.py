"""The limiter interface: request rate per key, open streams per tenant, daily tokens per tenant.

Both backends (in memory for one core, Redis for several) implement it and
run the same contract tests; the Redis one does each decision in one Lua
script, so a limit holds across every replica sharing the Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request against a key's rate limit."""

    allowed: bool
    #: Requests per window.
    limit: int
    #: Requests left now (whole ones).
    remaining: int
    #: Seconds until the bucket is full again.
    reset_seconds: float
    #: When refused: seconds until one request is allowed.
    retry_after_seconds: float = 0.0

    def headers(self) -> tuple[tuple[str, str], ...]:
        """As gRPC metadata; the gateway turns these into X-RateLimit-* headers."""
        return (
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(max(0, round(self.reset_seconds)))),
        )


class Limiter(Protocol):
    """Counts what each key and tenant uses."""

    async def hit(self, key: str, limit: int, window_seconds: float) -> Decision:
        """Take one request from `key`'s bucket of `limit` per `window_seconds`."""

    async def open_stream(self, tenant: str, stream: str, limit: int, lease_seconds: float) -> bool:
        """Count `stream` as open for `tenant` for `lease_seconds`, unless `limit` are open."""

    async def renew_stream(self, tenant: str, stream: str, lease_seconds: float) -> None:
        """Extend an open stream's lease (streams of a core that died lapse on their own)."""

    async def close_stream(self, tenant: str, stream: str) -> None:
        """The stream ended."""

    async def reserve_tokens(self, tenant: str, day: str, wanted: int, budget: int) -> int:
        """Take up to `wanted` of `tenant`'s `budget` for UTC `day`; how many were granted."""

    async def refund_tokens(self, tenant: str, day: str, unused: int) -> None:
        """Give back tokens reserved but not written."""

    async def tokens_used(self, tenant: str, day: str) -> int:
        """Tokens counted for `tenant` on `day`."""

    async def now(self) -> float:
        """The limits' clock, in seconds since the epoch: Redis's with Redis (every replica
        agrees on it), else this process's."""
