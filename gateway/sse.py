"""A job's gRPC event stream re-served as Server-Sent Events, framed exactly.

Frames: `retry: <ms>` once on connect; per event `id: <sequence>`, `event:
<name>`, `data: <event JSON on one line>`; a core heartbeat as `id: <sequence>`
plus a `: ping` comment, so `EventSource.lastEventId` advances without an event
being dispatched; the gateway's own `: ping` when the stream was idle.

The status is decided before the first byte: the relay awaits the job's first
event (or a short wait) and a gRPC error seen by then becomes an ordinary HTTP
error. After the first byte an error is a `failed` event without an `id:` (it is
not one of the job's events), then a clean end. A stream with nothing to send
(resuming after the terminal event) answers 204, which tells EventSource to stop
reconnecting. The upstream call is cancelled whenever the response ends, in
particular when the client goes away.

When the gateway stops, every stream ends cleanly after what it holds, with a
`retry:` spread over 0.5-1.5 times the usual delay, so its EventSource clients
reconnect (with `Last-Event-ID`) to another gateway, and not all in one instant.
A stream that had nothing yet still answers 200 (a 204 would stop EventSource for
good); a new job's stream waits for the job's first event, which names it, for half
the drain at most (then it ends with the `retry:` alone: a client that sent an
`Idempotency-Key` repeats the request elsewhere and is answered with the same job).

The hot path: each event is converted to JSON once (`codec.event_json`), and
every frame that is ready when the writer wakes goes out in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Final, Protocol

import grpc
import grpc.aio
from aiohttp import web
from scriptgen.v1 import generation_pb2

from gateway import rate_limits, state
from gateway.codec import dumps, event_json
from gateway.core_relay import RelayedStream
from gateway.errors import ApiError, Reason

_log = logging.getLogger(__name__)

#: The SSE `event:` name of each `GenerationEvent.kind`; heartbeats have none.
EVENT_NAMES: Final[Mapping[str, str]] = {
    "queued": "queued",
    "stage_started": "stage",
    "progress": "progress",
    "text_delta": "delta",
    "provider_switched": "failover",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}
TERMINAL_KINDS: Final = frozenset({"completed", "failed", "cancelled"})

CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"
PING: Final = b": ping\n\n"


def retry_frame(retry_ms: int) -> bytes:
    return f"retry: {retry_ms}\n\n".encode()


def drain_retry_frame(retry_ms: int) -> bytes:
    """The `retry:` a stream ends with when the gateway stops: 0.5-1.5 times `retry_ms`, so
    the clients of a stopping gateway do not all reconnect to the next in one instant."""
    return retry_frame(round(retry_ms * random.uniform(0.5, 1.5)))


def event_frame(event: generation_pb2.GenerationEvent) -> bytes:
    """One job event as an SSE frame."""
    kind = event.WhichOneof("kind")
    if kind == "heartbeat":
        return f"id: {event.sequence}\n: ping\n\n".encode()
    name = EVENT_NAMES.get(kind or "", kind or "message")
    return f"id: {event.sequence}\nevent: {name}\ndata: {event_json(event)}\n\n".encode()


def failed_frame(generation: str, error: ApiError) -> bytes:
    """A stream failure after the first byte, shaped like a job's `failed` event."""
    payload = {"generation": generation, "failed": {"status": _status_json(error)}}
    return f"event: failed\ndata: {dumps(payload)}\n\n".encode()


def _status_json(error: ApiError) -> dict[str, Any]:
    return {"code": error.code.value[0], "message": error.message, "details": error.details_json()}


class _Signal(enum.Enum):
    END = "end"  # the gRPC stream finished
    IDLE = "idle"  # nothing arrived within the wait
    DRAIN = "drain"  # the gateway is stopping


class CarriesEvent(Protocol):
    @property
    def event(self) -> generation_pb2.GenerationEvent: ...


_Item = generation_pb2.GenerationEvent | ApiError | _Signal
#: Where a stream's events come from: its own gRPC call, or a stream on a Relay call.
Upstream = grpc.aio.UnaryStreamCall[Any, Any] | RelayedStream


#: Seconds a loop timer may fire early (uvloop's timers have millisecond grain).
_TIMER_GRAIN: Final = 0.001


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class EventRelay:
    """Pumps one gRPC event stream into a queue the SSE writer drains.

    A stream on a Relay call (gateway.core_relay) delivers into the queue itself;
    only a stream with its own call needs a pump task.

    A wait for the next item is bounded by one loop timer per relay, not one per
    wait: a wait records when it must end, and the timer, when it fires before
    that (a later wait began), is set again for the rest. Events come every few
    tens of milliseconds and the bound is seconds, so the timer fires about once
    per bound rather than being set and cancelled for every event.
    """

    def __init__(self, call: Upstream) -> None:
        self._call = call
        # Unbounded: a job's log is finite, and a full queue would block drain().
        # A deque and one future per wait: asyncio.Queue with wait_for costs a task per event.
        self._items: deque[_Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        #: When the current wait ends, and the one timer.
        self._wait_until = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._pump: asyncio.Task[None] | None = None
        # A relayed stream's end is decoded outside this request's task: keep its id.
        self._request_id = state.CURRENT_REQUEST_ID.get()
        if isinstance(call, RelayedStream):
            call.attach(self._put_relayed, self._ended)
        else:
            self._pump = asyncio.create_task(self._read(call), name="scriptgen-sse-relay")

    def _put(self, item: _Item) -> None:
        self._items.append(item)
        if self._waiter is not None:
            _wake(self._waiter)

    def _put_relayed(self, event: generation_pb2.GenerationEvent) -> None:
        # A relayed event is part of a RelayResponse holding many streams' frames, which
        # it keeps in memory while it is. One the writer takes at once is used as it is;
        # one that waits (a slow client) is copied, so only the event is kept.
        if self._waiter is None:
            detached = generation_pb2.GenerationEvent()
            detached.CopyFrom(event)
            event = detached
        self._put(event)

    def _ended(self, error: grpc.aio.AioRpcError | None) -> None:
        self._put(
            _Signal.END if error is None else ApiError.from_rpc_error(error, self._request_id)
        )

    async def _read(self, call: grpc.aio.UnaryStreamCall[Any, Any]) -> None:
        try:
            async for response in call:
                self._put(_event_of(response))
            self._put(_Signal.END)
        except grpc.aio.AioRpcError as error:
            self._put(ApiError.from_rpc_error(error))
        except Exception:
            # Without this the writer would ping a dead stream forever.
            _log.exception("event relay failed")
            self._put(
                ApiError.gateway(
                    grpc.StatusCode.INTERNAL, Reason.GATEWAY_INTERNAL, "Internal gateway error."
                )
            )

    def ready(self) -> _Item | None:
        """The next item if one is queued already, else None."""
        return self._items.popleft() if self._items else None

    async def next(self, wait_seconds: float) -> _Item:
        """The next item, or IDLE when none arrives within `wait_seconds`."""
        if not self._items:
            until = self._wait_until = self._loop.time() + wait_seconds
            if self._timer is None or self._timer.when() > until:
                self._arm(until)
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popleft() if self._items else _Signal.IDLE

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # no wait is running: the next one sets the timer
        if self._loop.time() < self._wait_until - _TIMER_GRAIN:
            self._arm(self._wait_until)  # a later wait began after the timer was set
        else:
            waiter.set_result(None)

    def drain(self) -> None:
        """End the stream cleanly after what is already queued."""
        self._put(_Signal.DRAIN)

    async def close(self) -> None:
        """Cancel the upstream call; the core sees its stream cancelled."""
        self._call.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pump is None:
            return
        self._pump.cancel()
        try:
            await self._pump
        except asyncio.CancelledError:
            # Our own pump's cancellation; re-raise only if we are being cancelled.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


def _event_of(response: CarriesEvent) -> generation_pb2.GenerationEvent:
    return response.event


class _Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class _EventStreamResponse(web.StreamResponse):
    """A StreamResponse whose headers leave with its first write, not on their own.

    A stream's opening was three socket writes (headers, `retry:`, the first events), each
    a system call that may wake the client; now it is one. No end-to-end gain could be told
    from noise (BENCHMARKS.md, session 16). aiohttp's own `Response` holds its headers this
    way; were the attribute to go in a later aiohttp, the headers would go out alone again.
    """

    _send_headers_immediately = False


async def _write_events(
    response: web.StreamResponse,
    relay: EventRelay,
    item: _Item,
    generation: str,
    ping_interval_seconds: float,
    started: float,
    first_event: _Observer,
    *,
    retry_ms: int,
    opening: bytes = b"",
) -> None:
    """Write the stream's frames until its end; what is ready together goes in one write.

    `opening` (the `retry:` frame) goes out in the first write, with the first event when
    one is in hand, and the response headers with it (`_EventStreamResponse`).
    """
    written_events = 0
    # If the first wait ran out, `retry:` goes out alone now: no ping needed yet.
    ping_due = item is not _Signal.IDLE
    frames: list[bytes] = [opening] if opening else []
    while True:
        ended = False
        next_item: _Item | None = item
        while next_item is not None:
            if isinstance(next_item, generation_pb2.GenerationEvent):
                generation = next_item.generation or generation
                frames.append(event_frame(next_item))
                written_events += 1
                if next_item.WhichOneof("kind") in TERMINAL_KINDS:
                    ended = True
                    break
            elif isinstance(next_item, ApiError):
                frames.append(failed_frame(generation, next_item))
                ended = True
                break
            elif next_item is _Signal.IDLE:
                if ping_due:
                    frames.append(PING)
                ping_due = True
            else:
                if next_item is _Signal.DRAIN:
                    frames.append(drain_retry_frame(retry_ms))
                ended = True
                break
            next_item = relay.ready()
        if frames:
            await response.write(frames[0] if len(frames) == 1 else b"".join(frames))
            frames.clear()
            if started and written_events:
                first_event.observe(time.monotonic() - started)
                started = 0.0
        if ended:
            return
        item = await relay.next(ping_interval_seconds)


async def relay_events(
    request: web.Request,
    call: Upstream,
    *,
    generation: str,
    route: str,
) -> web.StreamResponse:
    """Answer `request` with the job events of `call`, as SSE."""
    config = request.app[state.CONFIG]
    metrics = request.app[state.METRICS]
    started = time.monotonic()
    relay = EventRelay(call)
    relays = request.app[state.RELAYS]
    relays.add(relay)
    if request.app[state.STOPPING].draining:
        relay.drain()  # opened after the drain began: ends as the others did
    try:
        first = await relay.next(config.first_event_wait_seconds)
        if first is _Signal.DRAIN and not generation:
            # A new job: its first event names it, so the client can follow it elsewhere. Half
            # the drain at most, so the answer is written before aiohttp cancels the handler.
            first = await relay.next(min(config.first_event_wait_seconds, config.drain_seconds / 2))
            relay.drain()
        if isinstance(first, ApiError):
            raise first
        if first is _Signal.END:
            return web.Response(status=204)
        if isinstance(first, generation_pb2.GenerationEvent):
            # An event came, so the initial metadata did too: this does not wait.
            with contextlib.suppress(grpc.aio.AioRpcError):
                rate_limits.take(request, await call.initial_metadata())
        response = _EventStreamResponse(
            headers={
                "Content-Type": CONTENT_TYPE,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        metrics.active_streams.inc()
        try:
            await response.prepare(request)
            await _write_events(
                response,
                relay,
                first,
                generation,
                config.ping_interval_seconds,
                started,
                metrics.time_to_first_event.labels(route=route),
                retry_ms=config.sse_retry_ms,
                opening=retry_frame(config.sse_retry_ms),
            )
            await response.write_eof()
        except ConnectionResetError:
            # The client left mid-write; closing the relay below cancels the upstream call.
            pass
        finally:
            metrics.active_streams.dec()
        return response
    finally:
        relays.discard(relay)
        await relay.close()
