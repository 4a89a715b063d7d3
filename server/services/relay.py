"""RelayService: the gateway's many event streams over one long-lived call.

A gateway re-serving thousands of SSE streams would otherwise hold a gRPC call
per stream, each with its HTTP/2 stream, call objects and per-message work on
both sides. On a Relay call the gateway opens numbered streams instead; each is
run by GenerationServicer's own GenerateScript or StreamGenerationEvents method,
so a relayed stream is that call in every respect but transport: the same
authentication, rate limit, admission, metrics, log line and job-token metadata.

The frames of every stream go out together: whatever is ready when the writer
runs becomes one RelayResponse (up to `RESPONSE_BUDGET_BYTES`), and it runs on
the cadence both ends keep (`scriptgen._relay_cadence`: at most one message per
5 ms), so a burst of starts sends a few large messages, not a small one per
stream. An event's frame is the event log's encoded bytes behind a stream
number, built without a message object (services.encoding). When the gateway
reads slowly, streams wait while more than `HIGH_WATER_BYTES` are unsent, so
memory stays bounded.

Protocol errors about one stream (number 0 or in use, no call, too much
metadata) end that stream with INVALID_ARGUMENT; the call goes on. The call ends
when the gateway has finished writing and every stream has ended; cancelling it
cancels every stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, NoReturn, cast

import grpc
from grpc import aio
from scriptgen._relay_cadence import WriteCadence
from scriptgen._relay_metadata import Metadata, from_wire, to_wire
from scriptgen.v1 import relay_service_pb2, relay_service_pb2_grpc

from server.errors import ServiceError, Unavailable, invalid
from server.services.encoding import varint
from server.services.generations import GenerationServicer

log = logging.getLogger(__name__)

#: Most bytes of frames in one RelayResponse (a lone larger frame goes alone).
RESPONSE_BUDGET_BYTES: Final = 1024 * 1024
#: Unsent bytes above which streams wait for the writer.
HIGH_WATER_BYTES: Final = 8 * 1024 * 1024
#: Most metadata entries of one opened stream.
MAX_METADATA_ENTRIES: Final = 64

_FRAMES_TAG: Final = b"\x0a"  # RelayResponse.frames, length-delimited
_STREAM_TAG: Final = b"\x10"  # RelayFrame.stream, varint


def _frame(stream_tag: bytes, body: bytes) -> bytes:
    """A RelayResponse `frames` entry: `body` holds the frame's kind field."""
    frame = body + stream_tag
    return _FRAMES_TAG + varint(len(frame)) + frame


class _Aborted(Exception):
    """A relayed stream's `abort`: its end frame is sent by the relay."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Metadata) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailers = trailers


class _StreamContext:
    """What GenerationServicer's streaming methods use of a ServicerContext, for one stream."""

    __slots__ = ("_deadline", "_metadata", "_relay", "_stream_tag", "trailers")

    def __init__(
        self, relay: _RelayCall, stream_tag: bytes, metadata: Metadata, deadline: float | None
    ) -> None:
        self._relay = relay
        self._stream_tag = stream_tag
        self._metadata = metadata
        self._deadline = deadline
        self.trailers: Metadata = ()

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        headers = relay_service_pb2.RelayFrame(
            headers=relay_service_pb2.RelayHeaders(metadata=to_wire(metadata))
        )
        self._relay.push(_frame(self._stream_tag, headers.SerializeToString()))

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailers = tuple(metadata)

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn:
        raise _Aborted(code, details, tuple(trailing_metadata))


class _RelayCall:
    """One Relay call: its streams' tasks and the frames waiting to go out."""

    def __init__(
        self, servicer: GenerationServicer, context: aio.ServicerContext[Any, Any]
    ) -> None:
        self._servicer = servicer
        self._context = context
        self._loop = asyncio.get_running_loop()
        self._streams: dict[int, asyncio.Task[None]] = {}
        self._frames: list[bytes] = []
        self._unsent = 0
        self._wake: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._reading = True
        #: The core is stopping: new opens are refused, and the call ends with its streams.
        self._closing = False

    async def run(self) -> None:
        reader = asyncio.create_task(self._read(), name="scriptgen-relay-reader")
        try:
            await self._write()
        finally:
            reader.cancel()
            streams = [reader, *self._streams.values()]
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)

    def close(self) -> None:
        """The core is stopping: take no new streams; end once the open ones have."""
        self._closing = True
        self._poke()

    # The writer.

    def push(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._unsent += len(frame)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def room(self) -> None:
        """Wait while too much is unsent (the gateway reads slowly)."""
        while self._unsent > HIGH_WATER_BYTES:
            if self._room is None or self._room.done():
                self._room = self._loop.create_future()
            await self._room

    async def _write(self) -> None:
        cadence = WriteCadence(self._loop)
        while True:
            if not self._frames:
                if (not self._reading or self._closing) and not self._streams:
                    return
                self._wake = self._loop.create_future()
                await self._wake
                continue
            wait = cadence.wait_seconds()
            if wait > 0:
                await asyncio.sleep(wait)  # what the streams push meanwhile joins this response
            count, size = 0, 0
            for frame in self._frames:
                if count and size + len(frame) > RESPONSE_BUDGET_BYTES:
                    break
                count += 1
                size += len(frame)
            batch = self._frames[:count]
            del self._frames[:count]
            cadence.wrote(cut_short=bool(self._frames))
            self._unsent -= size
            # Bytes pass the response serializer unchanged (services.encoding).
            await self._context.write(cast(Any, b"".join(batch)))
            room = self._room
            if room is not None and not room.done() and self._unsent <= HIGH_WATER_BYTES:
                room.set_result(None)

    # The reader.

    async def _read(self) -> None:
        try:
            while True:
                request = await self._context.read()
                if request is aio.EOF:
                    return
                assert isinstance(request, relay_service_pb2.RelayRequest)
                for opened in request.opens:
                    self._open(opened)
                for stream in request.cancels:
                    task = self._streams.get(stream)
                    if task is not None:
                        task.cancel()
        except Exception:
            log.exception("reading a Relay call failed; its open streams run on")
        finally:
            self._reading = False
            self._poke()

    def _open(self, opened: relay_service_pb2.RelayOpen) -> None:
        stream = opened.stream
        tag = _STREAM_TAG + varint(stream)
        call = opened.WhichOneof("call")
        problem: ServiceError | None = None
        if self._closing:
            problem = Unavailable(
                "the core is shutting down; retry on another", reason="SHUTTING_DOWN"
            )
        elif stream == 0:
            problem = invalid("stream", "must not be 0")
        elif stream in self._streams:
            problem = invalid("stream", f"{stream} is open already")
        elif call is None:
            problem = invalid("call", "is required")
        elif len(opened.metadata) > MAX_METADATA_ENTRIES:
            problem = invalid("metadata", f"must have at most {MAX_METADATA_ENTRIES} entries")
        elif not 0 <= opened.timeout_seconds < 1e9:
            problem = invalid("timeout_seconds", "must be 0 (none) or a positive number of seconds")
        if problem is not None:
            self._end(tag, problem.code, problem.message, _status_trailers(problem))
            return
        deadline = time.monotonic() + opened.timeout_seconds if opened.timeout_seconds else None
        context = _StreamContext(self, tag, from_wire(opened.metadata), deadline)
        if call == "generate_script":
            responses = self._servicer.GenerateScript(opened.generate_script, cast(Any, context))
        else:
            responses = self._servicer.StreamGenerationEvents(
                opened.stream_generation_events, cast(Any, context)
            )
        task = asyncio.create_task(
            self._run_stream(tag, context, responses), name="scriptgen-relay-stream"
        )
        # Not in the task's `finally`: a task cancelled before its first step (an open and
        # its cancel in one request) never runs it.
        task.add_done_callback(lambda _: self._ended(stream))
        self._streams[stream] = task

    def _ended(self, stream: int) -> None:
        self._streams.pop(stream, None)
        self._poke()

    async def _run_stream(
        self,
        tag: bytes,
        context: _StreamContext,
        responses: AsyncIterator[Any],
    ) -> None:
        try:
            remaining = context.time_remaining()
            ends = None if remaining is None else self._loop.time() + remaining
            async with asyncio.timeout_at(ends):
                async for response in responses:
                    encoded = response if response.__class__ is bytes else _serialized(response)
                    self.push(_frame(tag, encoded))
                    if self._unsent > HIGH_WATER_BYTES:
                        await self.room()
            self._end(tag, grpc.StatusCode.OK, "", context.trailers)
        except _Aborted as aborted:
            self._end(tag, aborted.code, aborted.details, aborted.trailers)
        except TimeoutError:
            self._end(tag, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ())
        except Exception:
            log.exception("relayed stream failed")
            self._end(tag, grpc.StatusCode.INTERNAL, "internal error", ())
        finally:
            with contextlib.suppress(Exception):
                await cast(Any, responses).aclose()

    def _end(self, tag: bytes, code: grpc.StatusCode, message: str, trailers: Metadata) -> None:
        end = relay_service_pb2.RelayFrame(
            end=relay_service_pb2.RelayEnd(
                code=code.value[0], message=message, trailers=to_wire(trailers)
            )
        )
        self.push(_frame(tag, end.SerializeToString()))


def _serialized(response: Any) -> bytes:
    return cast(bytes, response.SerializeToString())


def _status_trailers(error: ServiceError) -> Metadata:
    return (("grpc-status-details-bin", error.to_status().SerializeToString()), *error.trailers)


class RelayServicer(relay_service_pb2_grpc.RelayServiceServicer):
    """Implements scriptgen.v1.RelayService on a GenerationServicer."""

    def __init__(self, generations: GenerationServicer) -> None:
        self.generations = generations
        self._calls: set[_RelayCall] = set()
        self._closing = False

    def shut_down(self) -> None:
        """Refuse new streams (UNAVAILABLE) and end each call once its streams have, so
        gateways move to another core instead of waiting out the server's grace."""
        self._closing = True
        for call in self._calls:
            call.close()

    async def Relay(  # type: ignore[override]
        self,
        request_iterator: object,
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        """Run the call's streams until the gateway is done with it (see the module)."""
        code = grpc.StatusCode.CANCELLED
        call = _RelayCall(self.generations, context)
        if self._closing:
            call.close()
        self._calls.add(call)
        try:
            await call.run()
            code = grpc.StatusCode.OK
        finally:
            self._calls.discard(call)
            # Its streams are counted as the calls they are; the call itself once, here.
            self.generations.metrics.grpc_requests.labels("Relay", code.name).inc()
