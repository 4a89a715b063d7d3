"""A job's voice: numbers its events, appends them to the log, and keeps idle followers company.

The job is the only writer of its log, so sequence numbers are assigned here,
under a lock, in the order events happen. While the job is quiet for
`heartbeat_seconds` (a slow model, a long save) a Heartbeat is appended: a
loop timer looks, and only a due heartbeat costs a short task, so an idle job
holds no task of its own for it. With a
token budget, each text delta is counted before it is appended; one that does
not fit raises ResourceExhausted (TOKEN_BUDGET_EXHAUSTED) and is not appended.

`emit_now` appends from a loop callback, without a task, when nothing is in the
way: the log appends without waiting (the in-memory one), no budget is counted,
and no other emit is in flight or waiting — so events still land in call order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import cast

from google.protobuf.message import Message
from prometheus_client import Counter
from scriptgen.v1 import generation_pb2

from server.errors import ServiceError
from server.events import TERMINAL_KINDS, AppendsAtOnce, EventLog
from server.metrics import CoreMetrics
from server.ratelimit.budget import TokenBudget, estimate_tokens

log = logging.getLogger(__name__)


#: Whether each event log class appends at once: isinstance() against a Protocol walks
#: its members every time, a fifth of a job start's CPU before this.
_APPENDS_AT_ONCE: dict[type, bool] = {}


def _append_now(log: EventLog) -> Callable[[generation_pb2.GenerationEvent], bool] | None:
    """`log.append_now` when `log` is AppendsAtOnce, else None."""
    kind = type(log)
    at_once = _APPENDS_AT_ONCE.get(kind)
    if at_once is None:
        at_once = _APPENDS_AT_ONCE[kind] = isinstance(log, AppendsAtOnce)
    return cast(AppendsAtOnce, log).append_now if at_once else None


class JobEvents:
    """Appends the events of one job."""

    def __init__(
        self,
        generation: str,
        log: EventLog,
        metrics: CoreMetrics,
        heartbeat_seconds: float,
        *,
        budget: TokenBudget | None = None,
    ) -> None:
        self.generation = generation
        self._budget = budget
        self._log = log
        self._metrics = metrics
        self._heartbeat_seconds = heartbeat_seconds
        self._sequence = 0
        self._last_time = time.monotonic()
        self._lock = asyncio.Lock()
        #: Emits in flight or waiting for the lock: `emit_now` only runs when there are none.
        self._emitting = 0
        self._append_now = _append_now(log)
        self._ended = False
        #: An append was cancelled in flight: whether it landed is read back before the next.
        self._unsure = False
        #: The timer that looks for a due heartbeat, and a heartbeat being appended.
        self._beat_timer: asyncio.TimerHandle | None = None
        self._beating: asyncio.Task[None] | None = None
        self._beats = False
        #: The events counter of each kind, looked up once per job rather than per event.
        self._counters: dict[str, Counter] = {}

    @property
    def ended(self) -> bool:
        """Whether the terminal event was appended."""
        return self._ended

    async def emit(self, kind: str, payload: Message) -> generation_pb2.GenerationEvent:
        """Append one event of `kind` (a GenerationEvent oneof field name)."""
        self._emitting += 1
        try:
            async with self._lock:
                if self._ended:
                    raise RuntimeError(f"{self.generation} already ended")
                if self._budget is not None and kind == "text_delta":
                    await self._budget.spend(estimate_tokens(getattr(payload, "text", "")))
                if self._unsure:
                    self._sequence = await self._log.last_sequence(self.generation)
                    self._unsure = False
                event = self._event(kind, payload)
                try:
                    await self._log.append(event)
                except asyncio.CancelledError:
                    # Cancelled while the append was in flight: it may have reached the log
                    # (Redis) or not. The next event (the job's `cancelled`) resyncs first.
                    self._unsure = True
                    raise
                self._appended(kind)
                return event
        finally:
            self._emitting -= 1

    @property
    def can_emit_now(self) -> bool:
        """Whether nothing on this side stands in `emit_now`'s way (see the module docstring);
        a log may still decline to append at once."""
        return (
            self._append_now is not None
            and self._emitting == 0
            and self._budget is None
            and not self._unsure
        )

    def emit_now(self, kind: str, payload: Message) -> bool:
        """`emit`, done before returning, when `can_emit_now`; False (and nothing done) if not."""
        append_now = self._append_now
        if append_now is None or not self.can_emit_now:
            return False  # nothing done
        if self._ended:
            raise RuntimeError(f"{self.generation} already ended")
        if not append_now(self._event(kind, payload)):
            return False
        self._appended(kind)
        return True

    def _event(self, kind: str, payload: Message) -> generation_pb2.GenerationEvent:
        """The next event of the job (not yet appended)."""
        event = generation_pb2.GenerationEvent(
            generation=self.generation, sequence=self._sequence + 1
        )
        # Timestamp.GetCurrentTime() goes through datetime (about 8 µs an event); this
        # sets the same microsecond-grain time directly.
        micros = time.time_ns() // 1000
        stamp = event.time
        stamp.seconds = micros // 1_000_000
        stamp.nanos = micros % 1_000_000 * 1000
        getattr(event, kind).CopyFrom(payload)
        return event

    def _appended(self, kind: str) -> None:
        self._sequence += 1
        self._last_time = time.monotonic()
        counter = self._counters.get(kind)
        if counter is None:
            counter = self._counters[kind] = self._metrics.events.labels(kind)
        counter.inc()
        if kind in TERMINAL_KINDS:
            self._ended = True

    async def settle_budget(self) -> None:
        """Give back tokens reserved for deltas that were never written (the job ended)."""
        if self._budget is not None:
            await self._budget.settle()

    def start_heartbeat(self) -> None:
        """Begin appending Heartbeats while the job is idle."""
        if self._heartbeat_seconds > 0 and not self._beats:
            self._beats = True
            self._arm(self._heartbeat_seconds)

    async def stop_heartbeat(self) -> None:
        """Stop the heartbeats; one being appended is cancelled."""
        self._beats = False
        if self._beat_timer is not None:
            self._beat_timer.cancel()
            self._beat_timer = None
        beating, self._beating = self._beating, None
        if beating is not None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    def _arm(self, delay: float) -> None:
        self._beat_timer = asyncio.get_running_loop().call_later(delay, self._look)

    def _look(self) -> None:
        self._beat_timer = None
        if not self._beats or self._ended:
            return
        idle = time.monotonic() - self._last_time
        if idle < self._heartbeat_seconds:
            self._arm(self._heartbeat_seconds - idle)
            return
        self._beating = asyncio.get_running_loop().create_task(
            self._beat(), name=f"heartbeat {self.generation}"
        )

    async def _beat(self) -> None:
        try:
            await self.emit("heartbeat", generation_pb2.GenerationEvent.Heartbeat())
        except RuntimeError:
            return  # the terminal event won the race for the lock
        except Exception as error:
            # The log is unreachable (or another core ended the job): the job's own next
            # event meets the same error and ends the job; the heartbeats stop here.
            message = error.message if isinstance(error, ServiceError) else repr(error)
            log.warning("%s: heartbeat not appended: %s", self.generation, message)
            return
        finally:
            if self._beating is asyncio.current_task():
                self._beating = None
        if self._beats and not self._ended:
            self._arm(self._heartbeat_seconds)
