"""The clock grid that text deltas are cut on, shared by every stream of a process.

The coalescer (`server.jobs.coalescer`) cuts a stream's timed deltas on this
grid, and the synthetic writer wakes on it, so a chunk arrives when its cut is
due. Streams that cut together send their gRPC messages and SSE frames
together, and the processes downstream wake once for many streams instead of
once per stream. There are GRID_PHASES points per window: streams fall into
that many cohorts by when they started.

`DeltaGrid` runs what is due at a grid point in turns of the event loop of at
most STREAMS_PER_TURN streams each, not in one. A thousand streams due at one
instant would otherwise make one turn of tens of milliseconds, then another for
the tasks those wake-ups resumed; and grpc.aio takes a new call only after
several turns (its accept loop hops between futures and tasks), so under load
new calls waited seconds to be taken while the calls already running streamed
on (BENCHMARKS.md, session 10). In turns of a few dozen streams, a turn stays
at a few milliseconds and new calls are taken between them. A cut that runs a
few turns after its point counts as made at the point, so the stream keeps its
cohort.
"""

from __future__ import annotations

import asyncio
import collections
import math
import weakref
from collections.abc import Callable

#: Grid points per window.
GRID_PHASES = 4
#: At most this many streams are woken (or cut) in one turn of the event loop.
STREAMS_PER_TURN = 32


def grid_point(latest: float, window: float) -> float:
    """The last point of the grid (GRID_PHASES points per `window`) not after `latest`."""
    step = window / GRID_PHASES
    # The nudge keeps a grid point plus whole steps on the grid despite rounding.
    return math.floor(latest / step + 1e-9) * step


class GridCall:
    """A callback due at a grid point; `cancel()` drops it if it has not run yet."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self._callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self._callback = None

    def cancelled(self) -> bool:
        return self._callback is None


class DeltaGrid:
    """Runs callbacks due at grid points, STREAMS_PER_TURN per turn of the loop, in order.

    One loop timer per grid point in use, however many streams wait on it. What
    comes due while earlier callbacks still wait for their turn queues behind
    them, so the order is the order of the due times, then of the calls.
    """

    def __init__(self, per_turn: int = STREAMS_PER_TURN) -> None:
        # No reference to the loop (`asyncio.get_running_loop()` where one is needed): the
        # grid of a loop is kept in a weak mapping keyed by the loop, which it must not hold.
        self._per_turn = max(1, per_turn)
        #: Calls waiting for their grid point's timer, by loop time.
        self._points: dict[float, list[GridCall]] = {}
        #: Calls whose point has come, waiting for a turn.
        self._due: collections.deque[GridCall] = collections.deque()
        self._draining = False

    def call_at(self, when: float, callback: Callable[[], object]) -> GridCall:
        """Run `callback` in a turn at or after loop time `when` (a grid point)."""
        call = GridCall(callback)
        waiting = self._points.get(when)
        if waiting is None:
            waiting = self._points[when] = []
            asyncio.get_running_loop().call_at(when, self._reached, when)
        waiting.append(call)
        return call

    async def sleep_until(self, when: float) -> None:
        """Wait until the turn that runs what is due at loop time `when`."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        call = self.call_at(when, wake)
        try:
            await woken
        finally:
            call.cancel()

    def _reached(self, when: float) -> None:
        self._due.extend(self._points.pop(when, ()))
        if not self._draining:
            self._draining = True
            self._drain()

    def _drain(self) -> None:
        due = self._due
        ran = 0
        try:
            while due and ran < self._per_turn:
                callback = due.popleft()._callback
                if callback is None:
                    continue  # cancelled: costs no share of the turn
                ran += 1
                try:
                    callback()
                except Exception as error:  # as the loop does for a failing callback
                    asyncio.get_running_loop().call_exception_handler(
                        {"message": "a delta grid callback failed", "exception": error}
                    )
        finally:
            # Even when a callback raised past the handler above, the rest still get turns.
            if due:
                asyncio.get_running_loop().call_soon(self._drain)
            else:
                self._draining = False


_GRIDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeltaGrid] = (
    weakref.WeakKeyDictionary()
)


def delta_grid() -> DeltaGrid:
    """The grid of the running event loop (one per loop, shared by its streams)."""
    loop = asyncio.get_running_loop()
    grid = _GRIDS.get(loop)
    if grid is None:
        grid = _GRIDS[loop] = DeltaGrid()
    return grid
