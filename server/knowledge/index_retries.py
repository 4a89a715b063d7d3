"""Saved episodes whose indexing met Chroma down, indexed again later in the background.

An episode is saved before it is indexed (`server.jobs.pipeline`), so a job whose
indexing fails still completes, and later plans' retrieval misses the episode.
When the failure passes by itself — Chroma (or the embedding service) not reached,
or not in time (`transient`) — the episode is queued here and indexed again after
each of RETRY_DELAYS_SECONDS in turn (5 s, 30 s, 2 min, 10 min, 30 min from the
failure before); past the last it is given up, with an error logged. Another
failure (a record Chroma refuses) would come again, and is not retried.

What is worth retrying is the owner's call (`ChromaKnowledgeBase` also retries a
project store that was unavailable when a retry read it).

One retry runs at a time, oldest due first, so an outage's backlog does not come
back as a burst (a backlog therefore slips behind the schedule). At most
MAX_PENDING episodes wait; one more is not queued (logged). The caller's attempt
decides whether the episode is still wanted (`ChromaKnowledgeBase` reads it from
the project store, before and after its write: another replica may have deleted
it). Forgetting an episode or deleting its project here takes its retries out
first (`take`, cancelling the one under way, whose write then ends before the
delete's), and puts them back if the delete fails (`restore`). The queue lives in
this process and carries no context of the call that queued it: retries still
waiting when the knowledge base closes are lost, logged (the first LOGGED_NAMES by
name).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import httpx

from server.errors import Unavailable
from server.left_tasks import leave

log = logging.getLogger(__name__)

#: Seconds from one failed attempt to the next, in turn; after the last, no more.
RETRY_DELAYS_SECONDS: Final[tuple[float, ...]] = (5.0, 30.0, 120.0, 600.0, 1800.0)
#: Episodes waiting for a retry, at most.
MAX_PENDING: Final = 10_000
#: Episodes named in the shutdown's log line at most (the rest are counted).
LOGGED_NAMES: Final = 20
#: Causes of an Unavailable that pass by themselves: a service not reached, or not in time.
TRANSIENT_CAUSES: Final = (httpx.TransportError, OSError, TimeoutError)

#: One try: True when indexed, False when the episode is no longer wanted (not saved any more).
Attempt = Callable[[], Awaitable[bool]]
#: Which keys a `take` or a `drop` is for.
Match = Callable[[Hashable], bool]


def transient(error: BaseException) -> bool:
    """Whether `error` is an Unavailable caused by a service not reached or not answering in
    time, anywhere down its chain of causes: `__cause__`, or the exception being handled when
    it was raised (`__context__`): chromadb's client raises a ValueError while handling the
    connection error it met, without `from`."""
    if not isinstance(error, Unavailable):
        return False
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, TRANSIENT_CAUSES):
            return True
        seen.add(id(cause))
        if cause.__cause__ is not None or isinstance(cause, Unavailable):
            # Not an Unavailable's context: an error re-raised from a future takes the one
            # its awaiting code was handling as its context (a batch's, for one write alone).
            cause = cause.__cause__
        else:
            cause = None if cause.__suppress_context__ else cause.__context__
    return False


@dataclass(slots=True, eq=False)
class Pending:
    """One episode waiting to be indexed again."""

    key: Hashable
    name: str
    attempt: Attempt
    due: float
    #: Failed tries so far (the first one, the index stage's, included).
    failures: int
    #: Taken out while its try was under way: that try's outcome is not kept.
    taken: bool = False
    #: A copy taken out of a try under way (cancelled): put back, it is due after a delay anew.
    cut_short: bool = False


class IndexRetries:
    """Indexings to try again, keyed by what they index."""

    def __init__(
        self,
        retryable: Callable[[BaseException], bool] = transient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._retryable = retryable
        self._clock = clock
        self._pending: dict[Hashable, Pending] = {}
        self._runner: asyncio.Task[None] | None = None
        self._current: tuple[Pending, asyncio.Future[bool]] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        """Episodes waiting, the one being tried included."""
        current = self._current is not None and not self._current[0].taken
        return len(self._pending) + int(current)

    def retryable(self, error: BaseException) -> bool:
        """Whether a failure like `error` is worth trying again later."""
        return self._retryable(error)

    def add(self, key: Hashable, name: str, attempt: Attempt) -> bool:
        """Try `attempt` again after the first delay (its first try failed); whether it was
        queued (not when closed or full). `name` says which episode in the log."""
        if self._closed:
            return False
        if key not in self._pending and len(self._pending) >= MAX_PENDING:
            log.error(
                "story knowledge: %d indexings wait already; %s not retried", MAX_PENDING, name
            )
            return False
        due = self._clock() + RETRY_DELAYS_SECONDS[0]
        self._put(Pending(key, name, attempt, due, failures=1))
        return True

    def take(self, match: Match) -> list[Pending]:
        """Take out every retry whose key `match`es; the one under way is cancelled (its write,
        if begun, still ends before any write queued after this)."""
        taken = [pending for key, pending in self._pending.items() if match(key)]
        for pending in taken:
            del self._pending[pending.key]
        if self._current is not None and not self._current[0].taken and match(self._current[0].key):
            current, attempt = self._current
            current.taken = True  # the runner drops it, whatever its try's outcome
            attempt.cancel()
            taken.append(dataclasses.replace(current, taken=False, cut_short=True))
        return taken

    def restore(self, taken: Sequence[Pending]) -> None:
        """Put back what `take` took (the delete it was for failed): each waits for the time it
        was due, and the try `take` cut short for its next delay anew; not one queued again
        meanwhile."""
        trying = self._current[0] if self._current is not None else None
        for pending in taken:
            if self._closed or pending.key in self._pending:
                continue
            if trying is not None and not trying.taken and trying.key == pending.key:
                continue  # tried anew meanwhile
            if pending.cut_short:
                delay = RETRY_DELAYS_SECONDS[min(pending.failures, len(RETRY_DELAYS_SECONDS)) - 1]
                pending.due = self._clock() + delay
                pending.cut_short = False
            self._put(pending)

    @contextlib.contextmanager
    def taken_out(self, match: Match) -> Iterator[None]:
        """Around a delete of what the retries `match`ing would index: they are taken out
        first (`take`), and put back if the delete fails (`restore`)."""
        taken = self.take(match)
        try:
            yield
        except BaseException:
            self.restore(taken)
            raise

    async def close(self) -> None:
        """Stop retrying; what still waits is lost (logged)."""
        self._closed = True
        lost = [*self._pending.values()]
        if self._current is not None and not self._current[0].taken:
            lost.append(self._current[0])
        self._pending.clear()
        if lost:
            names = ", ".join(pending.name for pending in lost[:LOGGED_NAMES])
            more = f" and {len(lost) - LOGGED_NAMES} more" if len(lost) > LOGGED_NAMES else ""
            log.warning(
                "story knowledge: %d episodes not indexed, their retries dropped at shutdown: %s%s",
                len(lost),
                names,
                more,
            )
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.wait([runner])  # not suppress(): a cancelled close stays cancelled

    def _put(self, pending: Pending) -> None:
        self._pending[pending.key] = pending
        if self._runner is None or self._runner.done():
            self._wake = asyncio.Event()  # of the running loop, as the runner is
            # A context of its own: not that of the call whose job queued the first retry.
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="scriptgen-index-retries", context=contextvars.Context()
            )
        self._wake.set()

    async def _run(self) -> None:
        while self._pending:
            pending = min(self._pending.values(), key=lambda p: p.due)
            wait = pending.due - self._clock()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()  # one due sooner may have come
                continue
            del self._pending[pending.key]
            try:
                await self._retry(pending)
            except Exception:  # a fault of this module: the other retries still go on
                log.exception("story knowledge: retrying the indexing of %s failed", pending.name)

    async def _retry(self, pending: Pending) -> None:
        attempt = asyncio.ensure_future(pending.attempt())
        self._current = (pending, attempt)
        try:
            await asyncio.wait((attempt,))
        except asyncio.CancelledError:
            attempt.cancel()
            leave(attempt, "an indexing retry cut short")
            raise
        finally:
            self._current = None
        cancelled = attempt.cancelled()
        # Read whatever happens next, so that asyncio never logs it as not retrieved.
        error = None if cancelled else attempt.exception()
        if pending.taken:
            return  # taken out meanwhile (the episode forgotten, its project deleted)
        if cancelled:
            log.warning("story knowledge: the indexing retry of %s was cancelled", pending.name)
            return
        if error is None:
            if attempt.result():
                log.info("story knowledge: indexed %s on retry %d", pending.name, pending.failures)
            else:
                log.info("story knowledge: %s is no longer saved; not indexed", pending.name)
            return
        if not self._retryable(error):
            log.error("story knowledge: indexing %s failed, not retried: %s", pending.name, error)
            return
        if pending.failures >= len(RETRY_DELAYS_SECONDS):
            log.error(
                "story knowledge: gave up indexing %s after %d retries: %s",
                pending.name,
                pending.failures,
                error,
            )
            return
        if pending.key in self._pending or self._closed:
            return  # queued anew meanwhile, or closing
        pending.due = self._clock() + RETRY_DELAYS_SECONDS[pending.failures]
        pending.failures += 1
        self._pending[pending.key] = pending
