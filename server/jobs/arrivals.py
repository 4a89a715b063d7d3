"""New jobs before old work: in a burst, every job is started before the pipelines run.

grpc.aio's server accepts one new call per turn of the event loop. In a burst the
pipelines of the jobs already started (their plan stages, their model requests)
fill every turn, so the calls still waiting are accepted ever more slowly: with
200 jobs arriving at once on the real provider path, the core accepted the last
of them 2.8 s after the first, although each start took ~6 ms (BENCHMARKS.md,
session 6). So a job's pipeline waits, before its plan stage, until no job is
being started and none began or finished starting for QUIET_SECONDS — at most
MAX_DEFER_SECONDS, so that jobs arriving without pause still run.

A start is not over when it arrives: it reads its project, and a burst's starts
wait for those reads together. Counting only arrivals let a 200-job burst's first
pipelines begin while 60 starts still waited for their reads, and the pipelines'
work then held back both those starts and the writes of first events already
made: time to first event p95 114-171 ms instead of ~70 (BENCHMARKS.md, session 13).

Only a burst holds pipelines back: BURST_STARTS starts begun within
BURST_WINDOW_SECONDS, and for MAX_DEFER_SECONDS after starts last came that fast
(a burst's last starts wait for their reads, and its arrivals may pause). Steady
arrivals are not a burst, however slow each start: waiting for every start in
progress held each pipeline of a steady 100 jobs/s 20 ms at the median and 94 ms
at p99 on SQLite, 40 and 370 ms on PostgreSQL (BENCHMARKS.md, session 14), a lone
job 10 ms. A pipeline that finds no burst begins at once.

A burst holds pipelines for MAX_BURST_HOLD_SECONDS from when it is seen, no longer.
Starts that keep coming at the burst rate (400 a second, say) never leave the quiet
time, so before this bound every pipeline of such a load waited its longest hold,
MAX_DEFER_SECONDS, for as long as the load went on: ~0.5 s on every job's first token
(BENCHMARKS.md, session 27). Past the bound, what is held goes, and pipelines begin at
once until the burst is over; the next burst holds them again. A burst that arrives
all at once is over well before the bound here (1000 starts in ~0.4 s), so it is held
as before. The bound leaves about twice that: a burst whose starts take longer (a
bigger one, or a slower machine) is held for its first second only, and its later
pipelines then begin among its last starts. Waves less than MAX_DEFER_SECONDS apart
are one burst, and share one hold.

The pipelines held for a burst wait on one timer, not on a sleep each: each of a
burst's hundreds of held pipelines woke every QUIET_SECONDS while starts were in
progress, to look again (~12 % of the core's busy samples from a 500-stream burst's
first start to its first pipeline, under py-spy; BENCHMARKS.md, session 17). The timer
looks for all of them, and lets through those whose pause came or whose longest wait
passed.

Once settled, pipelines begin at most PIPELINES_PER_TURN per turn of the loop, so
that a burst's 1000 pipelines do not all take their first step in one turn: the
loop polls its sockets between, and the frames, reads and answers waiting there
are not held back behind them. Not fewer: each turn of a busy loop lasts 10-15 ms,
and at 8 per turn a 200-job burst's last pipeline began 220-290 ms after the burst's
starts were done, then waited a turn for each of its reads and requests; its first
token came last. At 64 the real provider path's time to first token p95 fell by
~10 % (BENCHMARKS.md, session 22), the 1000-stream burst's first events unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator

#: No start for this long ends a burst (starts come every ~1.5 ms in one).
QUIET_SECONDS = 0.01
#: The longest a job's pipeline waits for a burst to end.
MAX_DEFER_SECONDS = 0.5
#: The longest a burst holds pipelines, from when it is seen (a 1000-job burst's starts
#: take ~0.3-0.5 s here).
MAX_BURST_HOLD_SECONDS = 1.0
#: Pipelines that take their first step in one turn of the loop, at most.
PIPELINES_PER_TURN = 64
#: This many starts begun within BURST_WINDOW_SECONDS make a burst (320 starts a second,
#: well above what a steady load brings one core); it lasts MAX_DEFER_SECONDS after that.
BURST_STARTS = 16
BURST_WINDOW_SECONDS = 0.05


class Arrivals:
    """Starts in progress and when the last began or ended; pipelines wait for a pause."""

    def __init__(
        self,
        quiet_seconds: float = QUIET_SECONDS,
        max_defer_seconds: float = MAX_DEFER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        per_turn: int = PIPELINES_PER_TURN,
        burst_starts: int = BURST_STARTS,
        burst_window_seconds: float = BURST_WINDOW_SECONDS,
        max_burst_hold_seconds: float = MAX_BURST_HOLD_SECONDS,
    ) -> None:
        if per_turn < 1:
            raise ValueError("per_turn must be at least 1")
        if burst_starts < 1:
            raise ValueError("burst_starts must be at least 1")
        if burst_window_seconds < 0:
            raise ValueError("burst_window_seconds must not be negative")
        if max_burst_hold_seconds < 0:
            raise ValueError("max_burst_hold_seconds must not be negative")
        self._burst_starts = burst_starts
        self._burst_window = burst_window_seconds
        #: When the last `burst_starts` starts began, and when they last came at burst rate.
        self._recent: deque[float] = deque(maxlen=burst_starts)
        self._burst_seen = float("-inf")
        #: When the burst now on (or the last one) began, and how long a burst holds.
        self._burst_began = float("-inf")
        self._max_burst_hold = max_burst_hold_seconds
        self._quiet = quiet_seconds
        self._max_defer = max_defer_seconds
        self._clock = clock
        self._last = float("-inf")
        self._starting = 0
        self._per_turn = per_turn
        #: Pipelines let through in this turn of the loop, and those waiting for a later one.
        self._this_turn = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        #: Pipelines held for a burst, in the order they came, each with when it gives up;
        #: and the one timer that looks again.
        self._held: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def arrived(self) -> None:
        """A job arrived: it counts towards a burst, and the pause begins again."""
        now = self._last = self._clock()
        recent = self._recent
        recent.append(now)
        if len(recent) == self._burst_starts and now - recent[0] <= self._burst_window:
            if now - self._burst_seen > self._max_defer:
                self._burst_began = now  # no burst was on: this one begins
            self._burst_seen = now

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Around a job's start: in a burst, pipelines wait while any is in progress."""
        self._starting += 1
        self.arrived()
        try:
            yield
        finally:
            self._starting -= 1
            self._last = self._clock()

    def bursting(self) -> bool:
        """Whether a burst is on: starts came at the burst rate (`burst_starts` within the
        window) at most `max_defer_seconds` ago. It outlasts its arrivals, so the starts
        still waiting for their reads, and gaps in the arrivals, do not end it; and it ends
        by itself under any steady load."""
        return self._clock() - self._burst_seen <= self._max_defer

    def holding(self) -> bool:
        """Whether pipelines are held now: a burst is on, and it began at most
        `max_burst_hold_seconds` ago."""
        return self.bursting() and self._clock() - self._burst_began < self._max_burst_hold

    async def settled(self) -> None:
        """Return once it is this pipeline's turn to begin: at once, unless jobs are
        arriving in a burst that may still hold pipelines; then once no start was in
        progress for the quiet time (or the longest wait, or the burst's hold, passed)."""
        if self.holding():
            waiter = asyncio.get_running_loop().create_future()
            self._held.append((self._clock() + self._max_defer, waiter))
            self._release_held()
            await waiter
        await self._turn()

    def _release_held(self) -> None:
        """Let through the held pipelines whose wait is over; look again when the next
        one's may be (every quiet time while starts are in progress)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock()
        quiet_until = now
        if self.holding():
            quiet_until = now + self._quiet if self._starting else self._last + self._quiet
        held = self._held
        while held and (quiet_until <= now or held[0][0] <= now):
            _, waiter = held.popleft()
            if not waiter.done():  # a cancelled job's pipeline no longer waits
                waiter.set_result(None)
        if held:
            hold_ends = self._burst_began + self._max_burst_hold
            wait = max(0.0, min(quiet_until, held[0][0], hold_ends) - now)
            self._timer = asyncio.get_running_loop().call_later(wait, self._release_held)

    async def _turn(self) -> None:
        if not self._waiting and self._this_turn < self._per_turn:
            if self._this_turn == 0:
                asyncio.get_running_loop().call_soon(self._next_turn)
            self._this_turn += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        await waiter

    def _next_turn(self) -> None:
        """A new turn of the loop: let the next pipelines through."""
        self._this_turn = 0
        while self._waiting and self._this_turn < self._per_turn:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a cancelled job's pipeline no longer waits
                waiter.set_result(None)
                self._this_turn += 1
        if self._this_turn:
            asyncio.get_running_loop().call_soon(self._next_turn)
