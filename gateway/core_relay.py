"""The gateway's SSE streams over a few long-lived Relay calls to the core.

Without it every SSE stream holds its own gRPC call to the core: an HTTP/2
stream, call objects and a message per event on both sides, and a call set up
for every stream that starts. `CoreRelay` opens streams on `calls` RelayService
calls instead (server.services.relay), round robin, so the channel's balancing
still spreads them over every core; a call takes no new streams after
`max_age_seconds` and ends once its last stream has, so streams move to cores
that came up since. Opens and cancels go to the core together, on the cadence both
ends of a call keep (`scriptgen._relay_cadence`: at most one message per 5 ms, holding
what was made meanwhile); the core sends the frames of every stream together too.

A `RelayedStream` stands where a grpc.aio call would: the SSE relay attaches to
it, reads its initial metadata and cancels it. When a Relay call fails, each of
its streams ends with the call's error (UNAVAILABLE when the core went away), as
its own call would have; the next stream opens a new call. A stream refused
UNAVAILABLE before its first event (its core is stopping) is opened once more on
another call, and the refusing call takes no new streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

import grpc
import grpc.aio
from scriptgen._relay_cadence import WriteCadence
from scriptgen._relay_metadata import Metadata, from_wire, to_wire
from scriptgen.v1 import generation_pb2, generation_service_pb2, relay_service_pb2

if TYPE_CHECKING:
    from scriptgen.v1.relay_service_pb2_grpc import RelayServiceAsyncStub

_log = logging.getLogger(__name__)

#: Most bytes of opens in one RelayRequest (a lone larger open goes alone).
REQUEST_BUDGET_BYTES: Final = 1024 * 1024

OnEvent = Callable[[generation_pb2.GenerationEvent], None]
#: Called once when the stream ends: None when it ended normally, else its error.
OnEnd = Callable[[grpc.aio.AioRpcError | None], None]


def _error(code: grpc.StatusCode, message: str, trailers: Metadata = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=message
    )


class RelayedStream:
    """One GenerateScript or StreamGenerationEvents call carried on a Relay call."""

    __slots__ = (
        "_call",
        "_on_end",
        "_on_event",
        "_pending",
        "headers",
        "number",
        "opened",
        "retried",
    )

    def __init__(self, call: _RelayCall, number: int) -> None:
        self._call = call
        self.number = number
        #: Its open, kept until its first event: a stopping core's refusal is retried once.
        self.opened: relay_service_pb2.RelayOpen | None = None
        self.retried = False
        #: The stream's initial metadata, once it came (before its first event).
        self.headers: Metadata = ()
        self._on_event: OnEvent | None = None
        self._on_end: OnEnd | None = None
        #: What came before `attach` (nothing does today: attach follows open in one turn).
        self._pending: list[generation_pb2.GenerationEvent | grpc.aio.AioRpcError | None] = []

    def attach(self, on_event: OnEvent, on_end: OnEnd) -> None:
        """Deliver the stream's events and its end to these callbacks."""
        self._on_event, self._on_end = on_event, on_end
        pending, self._pending = self._pending, []
        for item in pending:
            if isinstance(item, generation_pb2.GenerationEvent):
                on_event(item)
            else:
                on_end(item)

    async def initial_metadata(self) -> Metadata:
        return self.headers

    def cancel(self) -> None:
        """Cancel the stream (the core sees its call cancelled); ended streams ignore it."""
        self._call.cancel_stream(self.number)

    def _event(self, event: generation_pb2.GenerationEvent) -> None:
        self.opened = None
        if self._on_event is None:
            self._pending.append(event)
        else:
            self._on_event(event)

    def _end(self, error: grpc.aio.AioRpcError | None) -> None:
        if self._on_end is None:
            self._pending.append(error)
        else:
            self._on_end(error)


class _RelayCall:
    """One Relay call: its open streams, and what is waiting to be written to it."""

    def __init__(
        self, stub: RelayServiceAsyncStub, reopen: Callable[[RelayedStream], bool]
    ) -> None:
        #: Opens a refused stream again on another call; False when it cannot.
        self._reopen = reopen
        self._loop = asyncio.get_running_loop()
        self.started = self._loop.time()
        self._call = stub.Relay()
        self.streams: dict[int, RelayedStream] = {}
        self._next = 1
        self._opens: list[relay_service_pb2.RelayOpen] = []
        self._cancels: list[int] = []
        self._wake: asyncio.Future[None] | None = None
        #: Takes no new streams; finishes writing once its last stream has ended.
        self.retired = False
        self.alive = True
        # A fresh context: not the log lines' request id of whichever request opened the call.
        self._reader = asyncio.create_task(
            self._read(), name="scriptgen-relay-reader", context=contextvars.Context()
        )
        self._writer = asyncio.create_task(
            self._write(), name="scriptgen-relay-writer", context=contextvars.Context()
        )

    def open(
        self,
        metadata: Sequence[tuple[str, str | bytes]],
        *,
        generate_script: generation_service_pb2.GenerateScriptRequest | None = None,
        stream_generation_events: generation_service_pb2.StreamGenerationEventsRequest
        | None = None,
    ) -> RelayedStream:
        stream = RelayedStream(self, 0)
        self.adopt(
            stream,
            relay_service_pb2.RelayOpen(
                metadata=to_wire(metadata),
                generate_script=generate_script,
                stream_generation_events=stream_generation_events,
            ),
        )
        return stream

    def adopt(self, stream: RelayedStream, opened: relay_service_pb2.RelayOpen) -> None:
        """Open `stream` on this call (again, when another call's core refused it)."""
        number = self._next
        self._next += 1
        stream._call, stream.number = self, number
        self.streams[number] = stream
        opened.stream = number
        stream.opened = opened
        self._opens.append(opened)
        self._poke()

    def cancel_stream(self, number: int) -> None:
        if self.streams.pop(number, None) is None or not self.alive:
            return
        for index, opened in enumerate(self._opens):
            if opened.stream == number:
                del self._opens[index]  # never sent: nothing to cancel
                return
        # Its open went out in an earlier request, so the core sees the cancel after it.
        self._cancels.append(number)
        self._poke()

    def retire(self) -> None:
        self.retired = True
        self._poke()

    def cancel(self) -> None:
        self._call.cancel()

    async def wait_closed(self) -> None:
        for task in (self._reader, self._writer):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _write(self) -> None:
        cadence = WriteCadence(self._loop)
        try:
            while self.alive:
                if self._opens or self._cancels:
                    wait = cadence.wait_seconds()
                    if wait > 0:
                        await asyncio.sleep(wait)  # opens made meanwhile join this request
                        continue  # and a cancel may have taken back what was waiting
                    request = self._request()
                    cadence.wrote(cut_short=bool(self._opens))
                    await self._call.write(request)
                elif self.retired and not self.streams:
                    await self._call.done_writing()
                    return
                else:
                    self._wake = self._loop.create_future()
                    await self._wake
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the call ended: the reader ends its streams with its status
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("writing to the core's relay call failed")
            self._call.cancel()

    def _request(self) -> relay_service_pb2.RelayRequest:
        count, size = 0, 0
        for opened in self._opens:
            size += opened.ByteSize()
            if count and size > REQUEST_BUDGET_BYTES:
                break
            count += 1
        request = relay_service_pb2.RelayRequest(opens=self._opens[:count], cancels=self._cancels)
        del self._opens[:count]
        self._cancels = []
        return request

    async def _read(self) -> None:
        error: grpc.aio.AioRpcError | None = None
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                assert isinstance(response, relay_service_pb2.RelayResponse)
                streams = self.streams
                for frame in response.frames:
                    stream = streams.get(frame.stream)
                    if stream is None:
                        continue  # cancelled here; the core had sent this already
                    kind = frame.WhichOneof("kind")
                    if kind == "event":
                        stream._event(frame.event)
                    elif kind == "headers":
                        stream.headers = from_wire(frame.headers.metadata)
                    elif kind == "end":
                        del streams[frame.stream]
                        end = frame.end
                        code = _CODES.get(end.code, grpc.StatusCode.UNKNOWN)
                        if code is grpc.StatusCode.UNAVAILABLE and stream.opened is not None:
                            # Refused before its first event (this core is stopping): no
                            # new stream comes here, and this one tries another call once.
                            self.retire()
                            if self._reopen(stream):
                                continue
                        stream._end(
                            None
                            if code is grpc.StatusCode.OK
                            else _error(code, end.message, from_wire(end.trailers))
                        )
                if self.retired and not streams:
                    self._poke()  # its last stream ended: finish writing
        except grpc.aio.AioRpcError as failure:
            error = failure
        except asyncio.CancelledError:
            error = _error(grpc.StatusCode.CANCELLED, "The gateway closed its relay call.")
            raise
        except Exception:
            _log.exception("reading the core's relay call failed")
            error = _error(grpc.StatusCode.INTERNAL, "The core's relay call failed.")
            self._call.cancel()
        finally:
            self.alive = False
            self._poke()
            streams, self.streams = self.streams, {}
            if streams:
                ended = error or _error(
                    grpc.StatusCode.UNAVAILABLE, "The core ended the relay call."
                )
                for stream in streams.values():
                    stream._end(ended)


_CODES: Final = {code.value[0]: code for code in grpc.StatusCode}


class CoreRelay:
    """Streams to the core over `calls` Relay calls, each retired after `max_age_seconds`."""

    def __init__(self, stub: RelayServiceAsyncStub, *, calls: int, max_age_seconds: float) -> None:
        if calls < 1:
            raise ValueError("a CoreRelay needs at least one call")
        self._stub = stub
        self._max_age = max_age_seconds
        self._calls: list[_RelayCall | None] = [None] * calls
        self._turn = 0
        #: Retired calls whose streams have not all ended yet.
        self._retired: set[_RelayCall] = set()

    def _call(self) -> _RelayCall:
        slot = self._turn
        self._turn = (slot + 1) % len(self._calls)
        call = self._calls[slot]
        if (
            call is not None
            and call.alive
            and not call.retired
            and call.started + self._max_age > call._loop.time()
        ):
            return call
        if call is not None:
            self._retire(call)
        call = self._calls[slot] = _RelayCall(self._stub, self._reopen)
        return call

    def _reopen(self, stream: RelayedStream) -> bool:
        """Open a refused stream on another call, once; False when it was tried already."""
        opened = stream.opened
        if opened is None or stream.retried:
            return False
        refused_on = stream._call
        call = self._call()
        if call is refused_on:
            return False
        stream.retried = True
        call.adopt(stream, opened)  # the refused request was copied when it was sent
        return True

    def _retire(self, call: _RelayCall) -> None:
        call.retire()
        if call.alive:
            self._retired.add(call)
            call._reader.add_done_callback(lambda _: self._retired.discard(call))

    def generate_script(
        self, request: generation_service_pb2.GenerateScriptRequest, metadata: Metadata
    ) -> RelayedStream:
        """Open a GenerateScript stream."""
        return self._call().open(metadata, generate_script=request)

    def stream_generation_events(
        self, request: generation_service_pb2.StreamGenerationEventsRequest, metadata: Metadata
    ) -> RelayedStream:
        """Open a StreamGenerationEvents stream."""
        return self._call().open(metadata, stream_generation_events=request)

    async def close(self) -> None:
        """Cancel every Relay call; their open streams end CANCELLED."""
        calls = [call for call in self._calls if call is not None] + list(self._retired)
        self._calls = [None] * len(self._calls)
        self._retired.clear()
        for call in calls:
            call.cancel()
        for call in calls:
            await call.wait_closed()
