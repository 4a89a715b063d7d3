"""Reader presence: one sweep keeps every open stream's reader lease alive in Redis."""

from __future__ import annotations

import asyncio

from server.events.redis_connection import open_redis
from server.jobs.coordination import RedisCoordination
from server.jobs.readers import ReaderPresence


class _Owner:
    """What the sweep needs of a job runner: the coordination and the orphan check."""

    def __init__(self, coordination: RedisCoordination) -> None:
        self.coordination = coordination
        self.owner_lease_seconds = 0.5
        self.orphan_checks: list[str] = []

    async def end_orphan(self, name: str, cancel_reason: str = "") -> bool:
        self.orphan_checks.append(name)
        return False


async def test_one_sweep_keeps_every_open_reader_counted_and_stops_with_the_last(
    redis_url: str, redis_prefix: str
) -> None:
    redis = open_redis(redis_url, redis_prefix)
    try:
        # Reader leases of 0.6 s, renewed every 0.2 s by the sweep.
        coordination = RedisCoordination(redis, lease_seconds=1.0, reader_seconds=0.6)
        owner = _Owner(coordination)
        presence = ReaderPresence(owner, renew_seconds=0.2)
        names = ["generations/ga", "generations/gb"]
        tokens = [
            (names[0], await presence.enter(names[0])),
            (names[0], await presence.enter(names[0])),
            (names[1], await presence.enter(names[1])),
        ]
        assert presence.open == 3
        # Three lease lengths later every reader still counts: the sweep renewed them all.
        await asyncio.sleep(1.8)
        assert await coordination.readers(names) == {names[0]: 2, names[1]: 1}
        # Each job was checked for a lost owner about once per owner lease, not per reader.
        assert set(owner.orphan_checks) == set(names)
        assert 2 <= owner.orphan_checks.count(names[0]) <= 4
        sweeps = [t for t in asyncio.all_tasks() if t.get_name() == "reader presence"]
        assert len(sweeps) == 1
        for name, token in tokens:
            await presence.leave(name, token)
        assert await coordination.readers(names) == {names[0]: 0, names[1]: 0}
        await asyncio.sleep(0)  # the cancelled sweep finishes
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "reader presence"]
        # A new stream starts a new sweep, and a reader no longer renewed lapses.
        again = await presence.enter(names[1])
        assert await coordination.readers([names[1]]) == {names[1]: 1}
        await presence.leave(names[1], again)
        stale = await coordination.reader_enter(names[0])  # never renewed
        await asyncio.sleep(0.8)
        assert await coordination.readers([names[0]]) == {names[0]: 0}
        await coordination.reader_leave(names[0], stale)
    finally:
        await redis.aclose()
