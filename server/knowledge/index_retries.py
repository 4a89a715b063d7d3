"""Saved episodes whose indexing Chroma refused, indexed again later in the background.

An episode is saved before it is indexed (`server.jobs.pipeline`), so a job whose
indexing fails still completes, and later plans' retrieval misses the episode.
When the failure is Chroma's unavailability (unreachable, timed out, closed:
`Unavailable`), which passes, the episode is queued here and indexed again
after each of RETRY_DELAYS_SECONDS in turn (5 s, 30 s, 2 min, 10 min, 30 min
from the failure before); past the last it is given up, with an error logged.
Another failure would come again, and is not retried.

One retry runs at a time, oldest due first, so an outage's backlog does not
come back as a burst. At most MAX_PENDING episodes wait (the one due last is
dropped past it, logged). An episode indexed or forgotten meanwhile, or its
project deleted, leaves the queue (`drop`); a retry under way for it is
cancelled, so it never writes after the forget's delete. The queue lives in
this process: retries still waiting when the knowledge base closes are lost,
logged by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Final

from server.errors import Unavailable
from server.left_tasks import leave

log = logging.getLogger(__name__)

#: Seconds from one failed attempt to the next, in turn; after the last, no more.
RETRY_DELAYS_SECONDS: Final[tuple[float, ...]] = (5.0, 30.0, 120.0, 600.0, 1800.0)
#: Episodes waiting for a retry, at most.
MAX_PENDING: Final = 10_000

Attempt = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    name: str
    attempt: Attempt
    due: float
    failures: int


class IndexRetries:
    """Indexings to try again, keyed by what they index (`drop` takes a key or a filter)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: dict[Hashable, _Pending] = {}
        self._runner: asyncio.Task[None] | None = None
        self._current: tuple[Hashable, asyncio.Future[None]] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key: Hashable, name: str, attempt: Attempt) -> bool:
        """Try `attempt` again after the first delay (it failed once); whether it was queued
        (not when closed). `name` says which episode in the log."""
        if self._closed:
            return False
        self._pending[key] = _Pending(name, attempt, self._clock() + RETRY_DELAYS_SECONDS[0], 1)
        if len(self._pending) > MAX_PENDING:
            last = max(self._pending, key=lambda k: self._pending[k].due)
            log.error("story knowledge: too many indexings to retry; gave up %s", last)
            del self._pending[last]
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="scriptgen-index-retries")
        self._wake.set()
        return key in self._pending

    def drop(self, match: Callable[[Hashable], bool]) -> None:
        """Forget every retry whose key `match`es, and cancel the one under way if it does."""
        for key in [key for key in self._pending if match(key)]:
            del self._pending[key]
        if self._current is not None and match(self._current[0]):
            self._current[1].cancel()

    async def close(self) -> None:
        """Stop retrying; what still waits is lost (logged)."""
        self._closed = True
        if self._pending:
            log.warning(
                "story knowledge: %d episodes not indexed, their retries dropped at shutdown: %s",
                len(self._pending),
                ", ".join(p.name for p in self._pending.values()),
            )
            self._pending.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _run(self) -> None:
        while self._pending:
            key = min(self._pending, key=lambda k: self._pending[k].due)
            wait = self._pending[key].due - self._clock()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()  # an earlier one may have come
                continue
            await self._retry(key, self._pending.pop(key))

    async def _retry(self, key: Hashable, pending: _Pending) -> None:
        attempt = asyncio.ensure_future(pending.attempt())
        self._current = (key, attempt)
        try:
            await asyncio.wait((attempt,))
        except asyncio.CancelledError:
            attempt.cancel()
            leave(attempt, "an indexing retry cut short")
            raise
        finally:
            self._current = None
        if attempt.cancelled():
            return  # dropped meanwhile (the episode forgotten, its project deleted)
        error = attempt.exception()
        if error is None:
            log.info("story knowledge: indexed %s on retry %d", pending.name, pending.failures)
            return
        if not isinstance(error, Unavailable):
            log.error(
                "story knowledge: indexing %s failed again, not retried: %s", pending.name, error
            )
            return
        if pending.failures >= len(RETRY_DELAYS_SECONDS):
            log.error(
                "story knowledge: gave up indexing %s after %d retries: %s",
                pending.name,
                pending.failures,
                error,
            )
            return
        if key in self._pending or self._closed:
            return  # indexed anew meanwhile (a newer attempt waits), or closing
        pending.due = self._clock() + RETRY_DELAYS_SECONDS[pending.failures]
        pending.failures += 1
        self._pending[key] = pending
