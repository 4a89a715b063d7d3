"""Concurrent reads of one key share one read in flight, never across a write."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from scriptgen.v1 import project_pb2

from server.shared_reads import SharedReads
from server.store import SqliteProjectStore


class Fetches:
    """A fetch that waits for `release`, counting how often it ran."""

    def __init__(self) -> None:
        self.count = 0
        self.release = asyncio.Event()

    async def fetch(self, answer: str) -> str:
        self.count += 1
        number = self.count
        await self.release.wait()
        return f"{answer} #{number}"


class CountedReads:
    """The store's trips to its reader thread, counted; each answer held while `held` is
    clear (the rows read, not yet returned)."""

    def __init__(self, store: SqliteProjectStore) -> None:
        self.trips = 0
        self.held = asyncio.Event()
        self.held.set()
        self._tripped = asyncio.Condition()
        self._read = store._read
        store._read = self._counted  # type: ignore[method-assign]

    async def _counted(self, query: str, parameters: tuple[Any, ...]) -> list[Any]:
        self.trips += 1
        rows = await self._read(query, parameters)
        async with self._tripped:  # told once the rows are read
            self._tripped.notify_all()
        await self.held.wait()
        return rows

    async def reach(self, count: int) -> None:
        """Return once `count` trips have read their rows."""
        async with asyncio.timeout(5), self._tripped:
            await self._tripped.wait_for(lambda: self.trips >= count)


async def test_callers_of_one_key_share_the_read_in_flight() -> None:
    reads: SharedReads[str, str] = SharedReads()
    fetches = Fetches()
    callers = [asyncio.create_task(reads.read("a", lambda: fetches.fetch("a"))) for _ in range(50)]
    other = asyncio.create_task(reads.read("b", lambda: fetches.fetch("b")))
    await asyncio.sleep(0)
    fetches.release.set()
    assert {await caller for caller in callers} == {"a #1"}
    assert await other == "b #2"
    assert fetches.count == 2
    # Nothing in flight now: the next caller reads again.
    assert await reads.read("a", lambda: fetches.fetch("a")) == "a #3"


@pytest.mark.parametrize("moment", ["while the write runs", "after the write ended"])
async def test_a_caller_after_a_write_began_does_not_share_an_older_read(moment: str) -> None:
    reads: SharedReads[str, str] = SharedReads()
    fetches = Fetches()
    before = asyncio.create_task(reads.read("a", lambda: fetches.fetch("a")))
    await asyncio.sleep(0)
    with reads.writing():
        if moment == "while the write runs":
            during = asyncio.create_task(reads.read("a", lambda: fetches.fetch("a")))
            # Nor with each other: the write's commit may land between them.
            also = asyncio.create_task(reads.read("a", lambda: fetches.fetch("a")))
            await asyncio.sleep(0)  # both ask while the write runs
    if moment == "after the write ended":
        during = asyncio.create_task(reads.read("a", lambda: fetches.fetch("a")))
    await asyncio.sleep(0)
    fetches.release.set()
    assert await before == "a #1"
    assert await during == "a #2"
    if moment == "while the write runs":
        assert await also == "a #3"


async def test_one_callers_cancellation_leaves_the_others_read_running() -> None:
    reads: SharedReads[str, str] = SharedReads()
    fetches = Fetches()
    leaving = asyncio.create_task(reads.read("a", lambda: fetches.fetch("a")))
    staying = asyncio.create_task(reads.read("a", lambda: fetches.fetch("a")))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    fetches.release.set()
    assert await staying == "a #1"
    assert leaving.cancelled()


async def test_a_failed_read_fails_every_caller_and_is_not_kept() -> None:
    reads: SharedReads[str, str] = SharedReads()
    release = asyncio.Event()

    async def failing() -> str:
        await release.wait()
        raise LookupError("gone")

    callers = [asyncio.create_task(reads.read("a", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    for caller in callers:
        with pytest.raises(LookupError, match="gone"):
            await caller
    assert await reads.read("a", lambda: asyncio.sleep(0, "fresh")) == "fresh"


async def test_a_burst_of_project_reads_costs_one_trip_per_project(tmp_path: Path) -> None:
    """200 job starts on 2 projects read each project about once, and see the last commit."""
    store = SqliteProjectStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        for name in ("one", "two"):
            await store.create_project(name, project_pb2.Project(title=name.title()))
        reads = CountedReads(store)
        projects = await asyncio.gather(
            *(store.get_project(("one", "two")[i % 2]) for i in range(200))
        )
        assert [p.title for p in projects[:2]] == ["One", "Two"]
        assert reads.trips == 2
        # Each caller has its own message.
        projects[0].title = "changed here"
        assert projects[2].title == "One"
        # A read after a commit sees it, though a read from before is still in flight.
        reads.held.clear()
        older = asyncio.create_task(store.get_project("one"))
        await reads.reach(3)
        # The update answers with the project read after its commit.
        update = asyncio.create_task(
            store.update_project("one", project_pb2.Project(title="Renamed"), ["title"])
        )
        await reads.reach(4)  # not sharing `older`'s read, from before the commit
        after = asyncio.create_task(store.get_project("one"))
        await asyncio.sleep(0.05)
        reads.held.set()
        assert (await older).title == "One"
        assert (await update).title == "Renamed"
        assert (await after).title == "Renamed"
        assert reads.trips == 4  # `after` shared the update's read
    finally:
        await store.close()


async def test_a_burst_of_plan_stage_reads_costs_one_trip_per_project(tmp_path: Path) -> None:
    """200 plan stages on 2 projects read each project's latest episodes once; a read
    after a save sees the new episode, though a read from before it is still in flight."""
    store = SqliteProjectStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        for name in ("one", "two"):
            await store.create_project(name, project_pb2.Project(title=name.title()))
            await store.create_episode(name, project_pb2.Episode(title=f"{name} 1", outline="o"))
        reads = CountedReads(store)
        found = await asyncio.gather(
            *(store.latest_episodes(("one", "two")[i % 2], 3) for i in range(200))
        )
        assert [[e.title for e in episodes] for episodes in found[:2]] == [["one 1"], ["two 1"]]
        assert reads.trips == 2
        # Another count is another read; each caller has its own messages.
        assert [e.title for e in await store.latest_episodes("one", 1)] == ["one 1"]
        assert reads.trips == 3
        found[0][0].title = "changed here"
        assert found[2][0].title == "one 1"

        reads.held.clear()
        older = asyncio.create_task(store.latest_episodes("one", 3))
        await reads.reach(4)
        saved = await store.create_episode("one", project_pb2.Episode(title="one 2", outline="o"))
        after = asyncio.create_task(store.latest_episodes("one", 3))
        await reads.reach(5)  # not sharing `older`'s read, from before the commit
        reads.held.set()
        assert [e.title for e in await older] == ["one 1"]
        assert [e.title for e in await after] == ["one 1", "one 2"]
        assert saved.number == 2
        # A project that is gone is still NOT_FOUND for every caller of a shared read.
        await store.delete_project("two", force=True)
        gone = await asyncio.gather(
            *(store.latest_episodes("two", 3) for _ in range(3)), return_exceptions=True
        )
        assert all(getattr(error, "reason", "") == "PROJECT_NOT_FOUND" for error in gone), gone
    finally:
        await store.close()
