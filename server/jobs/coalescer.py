"""Joins a stage's text chunks into TextDelta events by a short time window.

A model streams one token every few tens of milliseconds; one event per token
makes every hop (event log, gRPC message, SSE frame) pay per token. The
coalescer sends the first chunk at once — time to first token is what a reader
feels — and after that about one delta per `window_seconds`, carrying every
chunk that arrived meanwhile. A chunk that arrives after a quiet spell longer
than the window goes out at once too. A window of 0 sends every chunk as its
own delta (the naive per-token relay, kept for comparison).

Timed cuts fall on a clock grid that every stream of the process shares
(`server.delta_grid`, GRID_PHASES points per window): the next cut is the last
grid point no later than one window after the previous cut, so a chunk still
waits at most one window, and a steady stream cuts once per window. Streams
then cut in a few shared turns of the event loop, and their gRPC messages and
SSE frames go out together: the processes downstream wake once for many
streams instead of once per stream (BENCHMARKS.md, session 8). The price is an
early delta after a cut off the grid (the first chunk, or one after a quiet
spell), until the stream's cuts reach the grid. The grid runs the cuts due at
one point a few dozen streams per turn of the loop (`DeltaGrid`), so a
thousand streams cutting together do not hold the loop for one long turn.

While a timed cut waits, the provider's body need not be read before it: the
coalescer is the stream's `ReadPacing` (`server.providers.body_pacing`).

Offsets are assigned when a delta is cut, in the order deltas are appended, so
the concatenated deltas are exactly the chunks in order.

A cut appends at once when the job's events allow it (`JobEvents.emit_now`: the
in-memory log, no budget, no other emit in flight); a timed cut then costs no
task. Otherwise the timer starts a task that awaits the append.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from google.protobuf.message import Message
from scriptgen.v1 import generation_pb2

from server.delta_grid import GridCall, delta_grid, grid_point
from server.providers.body_pacing import READ_LEAD_SECONDS

_TextDelta = generation_pb2.GenerationEvent.TextDelta
#: A chunk this close to the end of the window goes out with the cut at once rather than
#: setting a timer for the rest: loop timers fire at millisecond grain, and a writer that
#: wakes once per window (the synthetic one) would otherwise cost two wake-ups per window.
EARLY_SECONDS = 0.002


class DeltaSink(Protocol):
    """Where the cuts go: a job's events (`JobEvents`), or a provider worker's frames."""

    def emit_now(self, kind: str, payload: Message) -> bool:
        """Append at once if that can be done without waiting; False (nothing done) if not."""

    async def emit(self, kind: str, payload: Message) -> object:
        """Append, waiting as long as it takes."""


class DeltaCoalescer:
    """Emits the text of one stream as TextDelta events, at most one per window."""

    def __init__(self, events: DeltaSink, window_seconds: float, offset: int = 0) -> None:
        self._events = events
        self._window = max(0.0, window_seconds)
        #: Characters handed to the log so far: the offset of the next delta.
        self.offset = offset
        self._pending: list[str] = []
        self._loop = asyncio.get_running_loop()
        self._last_cut = float("-inf")
        self._grid = delta_grid()
        self._timer: GridCall | None = None
        self._timer_due = 0.0
        self._flushing: asyncio.Task[object] | None = None
        self._error: BaseException | None = None

    async def add(self, text: str) -> None:
        """Take one chunk; it goes out now or with the next cut of the window."""
        if self._error is not None:
            raise self._error
        if not text:
            return
        self._pending.append(text)
        if self._timer is not None:
            return  # a cut is already due
        due = self._next_cut(self._last_cut)
        now = self._loop.time()
        if now >= due - EARLY_SECONDS:
            await self.flush()
            if now < due:
                # The cut of `due`, made a moment early: counted as made at its grid point,
                # so the next one is a window on, not a grid step short of it.
                self._last_cut = due
        else:
            self._timer = self._grid.call_at(due, self._cut_later)
            self._timer_due = due

    def resume_at(self) -> float | None:
        """When the provider's body must be read again (`ReadPacing`): just before the cut
        that what arrives from now on goes out with; None (read on at once) when a chunk
        would go out at once, as the first one does or one after a quiet spell."""
        if self._window <= 0:
            return None
        now = self._loop.time()
        if self._timer is not None:
            due = self._timer_due
            if due - READ_LEAD_SECONDS <= now:
                # Read for this cut already: what comes from now on goes with the next one.
                due = self._next_cut(due)
        else:
            due = self._next_cut(self._last_cut)
            if due - EARLY_SECONDS <= now:
                return None
        return due - READ_LEAD_SECONDS

    def _next_cut(self, last_cut: float) -> float:
        """The loop time of the cut after one at `last_cut`: the last grid point within a window."""
        window = self._window
        if window <= 0 or last_cut == float("-inf"):
            return last_cut + window
        return grid_point(last_cut + window, window)

    async def flush(self) -> None:
        """Emit what is pending now (before an event that must follow the text so far)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        flushing = self._flushing
        if flushing is not None and not flushing.done():
            # A timed cut's task may not have reached JobEvents yet: this delta, and the
            # event the caller sends next, must come after it.
            await asyncio.wait((flushing,))
        if self._error is not None:
            raise self._error
        if not self._pending:
            return
        delta = self._take()
        if not self._events.emit_now("text_delta", delta):
            # The offset was fixed before any await; JobEvents' lock appends in call order.
            await self._events.emit("text_delta", delta)

    def _take(self) -> generation_pb2.GenerationEvent.TextDelta:
        """The pending text as the next delta, its offset fixed; the cut happens now."""
        text = "".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        offset = self.offset
        self.offset += len(text)
        self._last_cut = self._loop.time()
        return _TextDelta(text=text, offset=offset)

    async def close(self) -> None:
        """Emit the rest once the stream ended; raises what a timed cut ran into."""
        flushing = self._flushing
        if flushing is not None:
            # wait(), not `await flushing` under suppress(CancelledError): that would
            # swallow a cancellation of the job itself, and the cancelled job would go on.
            # What the cut ran into, `_flushed` has kept in `_error` by the time wait() returns.
            await asyncio.wait((flushing,))
        if self._error is not None:
            raise self._error
        await self.flush()

    def abort(self) -> None:
        """Drop pending text and any timed cut (the job was cancelled or failed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()
        self._pending.clear()

    def _cut_later(self) -> None:
        self._timer = None
        if not self._pending:
            return
        delta = self._take()
        # Made at its grid point, however many turns later the grid ran it: the next cut
        # stays on this stream's cohort.
        self._last_cut = self._timer_due
        try:
            if self._events.emit_now("text_delta", delta):
                return
        except Exception as error:  # what the awaited append would have run into
            self._error = error
            return
        self._flushing = self._loop.create_task(self._events.emit("text_delta", delta))
        self._flushing.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[object]) -> None:
        if task is self._flushing:
            self._flushing = None
        if not task.cancelled() and task.exception() is not None:
            self._error = task.exception()
