"""Concurrent reads of one key share one read in flight, unless a write came in between.

A burst of job starts reads the same few projects hundreds of times at once, and
every SQLite read is a trip through the store's one reader thread: 200 starts
queued 200 trips, and the last start waited for all of them. With `SharedReads`
a caller that finds a read of its key in flight shares that read's answer, if no
write began or ended since the read was issued (`writing` is around every write).
A caller after a write's end issues its own read, so it sees what was committed
before it called, as it would have alone; while a write is in progress nothing is
shared (its commit may already have landed). Only for a store this process is the
sole writer of: another process's commit is not seen here.

The read runs as a task of its own: one caller's cancellation does not end the
others' read. A caller that counts writes of its own (the knowledge base's
emptiness probes, per project) puts its count in the key instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedReads(Generic[K, V]):
    """Reads in flight by key, and a count of the writes begun or ended."""

    def __init__(self) -> None:
        self._writes = 0
        self._reads: dict[K, tuple[int, asyncio.Task[V]]] = {}

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around every write: reads in flight are not shared from its begin to its end."""
        self._writes += 1
        try:
            yield
        finally:
            self._writes += 1

    async def read(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        """`fetch()`'s answer, shared with the callers of the same key meanwhile."""
        if self._writes % 2:
            # A write is in progress: its commit may land before a shared read's answer
            # comes back, and this caller may have seen it land elsewhere. Read alone.
            return await fetch()
        shared = self._reads.get(key)
        if shared is None or shared[0] != self._writes:
            task = asyncio.ensure_future(fetch())
            shared = self._reads[key] = (self._writes, task)
            task.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(shared[1])

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        shared = self._reads.get(key)
        if shared is not None and shared[1] is task:
            del self._reads[key]
        if not task.cancelled():
            task.exception()  # its callers see it; with none left, it is not "never retrieved"


class _Queued(Generic[V]):
    """One read that callers may join until it begins."""

    __slots__ = ("begun", "task")

    def __init__(self) -> None:
        self.begun = False
        self.task: asyncio.Future[V] | None = None

    def begin(self) -> None:
        """Called as the read begins, on whatever thread runs it."""
        self.begun = True


class QueuedReads(Generic[K, V]):
    """Concurrent reads of one key share one read, but only while it waits for its turn.

    For a store that other processes write to as well (a Chroma server), where
    `SharedReads` would be wrong: a caller that joins a read already begun could
    miss a commit another process made before the caller called. A read that has
    not begun takes its snapshot after every caller that joined it arrived, so each
    sees what was committed before it called, as it would alone. Reads queued
    behind others (a busy thread pool in a burst) are where this pays: 200 job starts
    probing one project were 200 reads. `fetch(begin)` must call `begin()` as the read
    begins (on any thread); until then callers of the same key join it.
    """

    def __init__(self) -> None:
        self._reads: dict[K, _Queued[V]] = {}

    async def read(self, key: K, fetch: Callable[[Callable[[], None]], Awaitable[V]]) -> V:
        """`fetch(begin)`'s answer, shared with the callers of the same key until it begins."""
        queued = self._reads.get(key)
        if queued is None or queued.begun or queued.task is None or queued.task.done():
            fresh: _Queued[V] = _Queued()
            fresh.task = task = asyncio.ensure_future(fetch(fresh.begin))
            self._reads[key] = queued = fresh
            task.add_done_callback(lambda done: self._done(key, fresh, done))
        assert queued.task is not None
        return await asyncio.shield(queued.task)

    def _done(self, key: K, queued: _Queued[V], task: asyncio.Future[V]) -> None:
        if self._reads.get(key) is queued:
            del self._reads[key]
        if not task.cancelled():
            task.exception()  # its callers see it; with none left, it is not "never retrieved"
