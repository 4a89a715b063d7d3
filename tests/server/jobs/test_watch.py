"""The owner's lease renewals: on a task of their own, and sent again when Redis is slow.

One slow Redis reply (a socket that stalls up to its 7 s timeout) used to hold a
renewal, and every renewal after it, past the 10 s lease, and a slow cancel or
reader query in the same round held them too: another core then took a healthy job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection

from server.jobs.coordination import LeaseLoss, MemoryCoordination
from server.jobs.watch import JobWatch

LEASE = 0.6
NAME = "generations/gwatched"


class SlowRedis(MemoryCoordination):
    """A coordination whose first renewal, and every cancel-request query, never answer."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals: list[float] = []

    async def renew(self, names: Collection[str]) -> dict[str, LeaseLoss]:
        self.renewals.append(time.monotonic())
        if len(self.renewals) == 1:
            await asyncio.sleep(3600)  # a reply that never comes on this connection
        return {}

    async def cancel_requests(self, names: Collection[str]) -> dict[str, str]:
        await asyncio.sleep(3600)
        return {}


def _watch(coordination: MemoryCoordination) -> JobWatch:
    """A watch of one running job whose lease must never be lost (a cancel fails the test)."""

    async def cancel(name: str, reason: str) -> None:
        raise AssertionError(f"{name} cancelled: {reason}")

    return JobWatch(
        coordination,
        lambda: {NAME: True},
        cancel,
        abandon_after_seconds=0,
        lease_seconds=LEASE,
        tick_seconds=0.05,
    )


async def test_a_stalled_renewal_is_sent_again_before_the_lease_ends() -> None:
    coordination = SlowRedis()

    watch = _watch(coordination)
    started = time.monotonic()
    watch.start()
    try:
        await asyncio.sleep(LEASE * 1.5)
    finally:
        await watch.stop()
    # The first renewal a third of the lease in, given up a third later and sent again,
    # then every third of the lease: before, the stalled one held every later renewal
    # (and the stalled cancel query held them all).
    assert len(coordination.renewals) >= 3, coordination.renewals
    first, second = coordination.renewals[:2]
    assert second - started < LEASE
    assert second - first < LEASE / 3 + 0.15


class RefusingRedis(MemoryCoordination):
    """A coordination whose first renewal is refused the way Redis explains a refusal
    (READONLY in a failover, OOM): an error redis_errors does not turn into an outage."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals = 0

    async def renew(self, names: Collection[str]) -> dict[str, LeaseLoss]:
        self.renewals += 1
        if self.renewals == 1:
            raise RuntimeError("READONLY You can't write against a read only replica.")
        return {}


async def test_a_refused_renewal_does_not_end_the_renewals() -> None:
    coordination = RefusingRedis()

    watch = _watch(coordination)
    watch.start()
    try:
        await asyncio.sleep(LEASE * 1.5)
    finally:
        await watch.stop()
    assert coordination.renewals >= 3, "the renewals went on after the refusal"
