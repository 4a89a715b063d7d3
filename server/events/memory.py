"""The in-memory event log: the embedded default, one process, no persistence.

Finished jobs' logs are kept for a bounded time and number (server.retention):
a reader may resume a finished job until then, after which it is NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from scriptgen.v1 import generation_pb2

from server.errors import NotFound
from server.events.base import EventLogConflict, decoded, is_terminal
from server.retention import FinishedJobs, Retention


@dataclass(slots=True)
class _JobLog:
    #: Each event serialized once (server.events.base): a 20-minute episode's ~900 deltas
    #: take ~110 KB so, ~850 KB as message objects.
    events: list[bytes] = field(default_factory=list)
    #: One future per follower that caught up, resolved by the next append: no object is
    #: made per append when nobody waits (an asyncio.Event per append was ~4 % of the core).
    waiting: list[asyncio.Future[None]] = field(default_factory=list)
    ended_at: float | None = None


class MemoryEventLog:
    """Per-job event lists; finished logs are dropped by age and count (`Retention`)."""

    def __init__(
        self, retention_seconds: float = 24 * 3600.0, *, retention: Retention | None = None
    ) -> None:
        self._logs: dict[str, _JobLog] = {}
        self._finished = FinishedJobs(retention or Retention(seconds=retention_seconds))

    def _log(self, generation: str) -> _JobLog:
        log = self._logs.get(generation)
        if log is None:
            raise NotFound("generation", generation, "GENERATION_NOT_FOUND")
        return log

    def _drop(self, names: list[str]) -> None:
        # A follower already reading a dropped log keeps its own reference to it.
        for name in names:
            self._logs.pop(name, None)

    @property
    def finished_kept(self) -> int:
        """How many finished jobs' logs are held now."""
        return len(self._finished)

    async def create(self, generation: str) -> None:
        self._drop(self._finished.expired())
        self._logs.setdefault(generation, _JobLog())

    async def append(self, event: generation_pb2.GenerationEvent) -> None:
        self._store(event)

    def append_now(self, event: generation_pb2.GenerationEvent) -> bool:
        """`append`, done before returning: nothing here waits (`AppendsAtOnce`)."""
        self._store(event)
        return True

    def _store(self, event: generation_pb2.GenerationEvent) -> None:
        log = self._log(event.generation)
        if log.ended_at is not None:
            raise EventLogConflict(f"{event.generation} already ended; no event may follow")
        if event.sequence != len(log.events) + 1:
            raise EventLogConflict(
                f"{event.generation}: sequence {event.sequence} after {len(log.events)}"
            )
        log.events.append(event.SerializeToString())
        if is_terminal(event):
            log.ended_at = time.monotonic()
            self._drop(self._finished.ended(event.generation))
        if log.waiting:
            waiting, log.waiting = log.waiting, []
            for follower in waiting:
                if not follower.done():  # a cancelled follower's future is done
                    follower.set_result(None)

    def writer_done(self, generation: str) -> None:
        """Nothing to do: followers read the same lists the appends wrote."""

    async def last_sequence(self, generation: str) -> int:
        return len(self._log(generation).events)

    async def ended(self, generation: str) -> bool:
        return self._log(generation).ended_at is not None

    async def end(self, generation: str) -> generation_pb2.GenerationEvent | None:
        log = self._log(generation)
        if log.ended_at is None:
            return None
        return generation_pb2.GenerationEvent.FromString(log.events[-1])

    def follow(
        self, generation: str, after_sequence: int
    ) -> AsyncIterator[generation_pb2.GenerationEvent]:
        return decoded(self.follow_encoded(generation, after_sequence))

    async def follow_encoded(
        self, generation: str, after_sequence: int
    ) -> AsyncGenerator[bytes, None]:
        log = self._log(generation)
        loop = asyncio.get_running_loop()
        position = after_sequence
        while True:
            while position < len(log.events):
                position += 1
                yield log.events[position - 1]
            # The terminal event is the last: once it was yielded, nothing follows.
            if log.ended_at is not None:
                return
            appended = loop.create_future()
            log.waiting.append(appended)
            try:
                await appended
            except asyncio.CancelledError:
                if appended in log.waiting:  # a reader that leaves holds no place in the log
                    log.waiting.remove(appended)
                raise
