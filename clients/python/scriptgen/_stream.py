"""A job's event stream that survives broken links: every event exactly once, in order.

`GenerationStream` starts a job (GenerateScript) or attaches to one
(StreamGenerationEvents). When the link breaks — UNAVAILABLE, a stream that
ends without a terminal event, or silence beyond the idle timeout — it
re-attaches from the last sequence it handed out, with backoff:

* before the first event the job's name is unknown, so it repeats
  GenerateScript with the same `request_id`, which the core answers with the
  same job's stream from sequence 1;
* after that it calls StreamGenerationEvents(name, after_sequence=last).

Replayed duplicates are dropped; a sequence that skips ahead raises
`SequenceGapError`, because a screenplay with a hole is worse than an error.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import TYPE_CHECKING, TypeAlias

import grpc
import grpc.aio

from scriptgen._config import ClientConfig
from scriptgen._errors import (
    DeadlineExceededError,
    RPCError,
    SequenceGapError,
    StreamError,
    StreamInterruptedError,
)
from scriptgen._script import GenerationResult, ScriptAssembler, is_terminal
from scriptgen.v1 import generation_pb2, generation_service_pb2

if TYPE_CHECKING:
    from scriptgen.v1.generation_service_pb2_grpc import GenerationServiceAsyncStub

_EventCall: TypeAlias = (
    "grpc.aio.UnaryStreamCall["
    "generation_service_pb2.GenerateScriptRequest, generation_service_pb2.GenerateScriptResponse"
    "] | grpc.aio.UnaryStreamCall["
    "generation_service_pb2.StreamGenerationEventsRequest,"
    " generation_service_pb2.StreamGenerationEventsResponse]"
)

_Metadata: TypeAlias = tuple[tuple[str, str], ...]


class _LinkBrokenError(Exception):
    """Internal: the current call can no longer deliver events; resume."""


class GenerationStream:
    """Async iterator of a job's `GenerationEvent`s, from the first unseen one to the terminal one.

    Use it as `async with client.generate(...) as stream: async for event in stream: ...`
    so the underlying call is cancelled when the caller stops early. Leaving
    early does not cancel the job; `Client.cancel_generation(stream.name)` does.
    """

    def __init__(
        self,
        stub: GenerationServiceAsyncStub,
        config: ClientConfig,
        *,
        request: generation_service_pb2.GenerateScriptRequest | None = None,
        generation: str = "",
        after_sequence: int = 0,
        deadline: float | None = None,
        metadata: _Metadata = (),
    ) -> None:
        if request is None and not generation:
            raise ValueError("either a GenerateScript request or a generation name is needed")
        if after_sequence < 0:
            raise ValueError("after_sequence must not be negative")
        self._stub = stub
        self._config = config
        self._request = request
        self._name = generation
        self._last_sequence = after_sequence
        self._metadata = config.metadata + metadata
        self._deadline = None if deadline is None else time.monotonic() + deadline
        self._call: _EventCall | None = None
        self._failures = 0
        self._resumes = 0
        self._finished = False

    @property
    def name(self) -> str:
        """The job, `generations/{generation}`; "" until its first event arrived."""
        return self._name

    @property
    def request_id(self) -> str:
        """The idempotency key the job was started with ("" when following a job)."""
        return self._request.request_id if self._request is not None else ""

    @property
    def last_sequence(self) -> int:
        """Sequence of the last event handed out (or the `after_sequence` started from)."""
        return self._last_sequence

    @property
    def resumes(self) -> int:
        """How many times the stream was re-opened after a broken link."""
        return self._resumes

    @property
    def finished(self) -> bool:
        """Whether the stream has ended, with the terminal event or an error."""
        return self._finished

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> generation_pb2.GenerationEvent:
        while not self._finished:
            try:
                event = await self._next_from_call()
            except _LinkBrokenError as broken:
                self._drop_call()
                await self._pause_before_resume(broken)
                continue
            except BaseException:
                # Cancellation of the caller keeps the stream resumable; errors end it.
                self._drop_call()
                raise
            if event.sequence <= self._last_sequence:
                continue  # already handed out before the link broke
            if event.sequence != self._last_sequence + 1:
                self._end()
                raise SequenceGapError(
                    generation=self._name,
                    last_sequence=self._last_sequence,
                    received=event.sequence,
                )
            if self._name and event.generation and event.generation != self._name:
                self._end()
                raise StreamError(
                    f"expected events of {self._name}, received one of {event.generation}",
                    generation=self._name,
                    last_sequence=self._last_sequence,
                )
            self._name = self._name or event.generation
            self._last_sequence = event.sequence
            self._failures = 0
            if is_terminal(event):
                self._end()
            return event
        raise StopAsyncIteration

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading: cancel the call. The job itself keeps running."""
        self._end()

    async def collect(self) -> GenerationResult:
        """Read the remaining events and return how the job ended with its script.

        Only meaningful on a stream that has not handed out any event yet, since
        the script is assembled from the events this call reads.
        """
        assembler = ScriptAssembler()
        async for event in self:
            assembler.feed(event)
        return assembler.result()

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            self._end()
            raise DeadlineExceededError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline passed while following {self._name or 'the job'}",
            )
        return remaining

    def _open(self) -> _EventCall:
        timeout = self._remaining()
        if self._name:
            return self._stub.StreamGenerationEvents(
                generation_service_pb2.StreamGenerationEventsRequest(
                    name=self._name, after_sequence=self._last_sequence
                ),
                timeout=timeout,
                metadata=self._metadata,
            )
        assert self._request is not None
        return self._stub.GenerateScript(self._request, timeout=timeout, metadata=self._metadata)

    async def _next_from_call(self) -> generation_pb2.GenerationEvent:
        if self._call is None:
            self._call = self._open()
        call = self._call
        try:
            async with asyncio.timeout(self._config.stream_idle_timeout):
                response = await call.read()
        except TimeoutError as error:
            raise _LinkBrokenError(
                f"no event for {self._config.stream_idle_timeout:g}s (heartbeats included)"
            ) from error
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                raise _LinkBrokenError(error.details() or "unavailable") from error
            self._end()
            raise RPCError.from_call(error) from error
        if isinstance(
            response,
            generation_service_pb2.GenerateScriptResponse
            | generation_service_pb2.StreamGenerationEventsResponse,
        ):
            return response.event
        # A clean end before the terminal event: the server went away politely.
        raise _LinkBrokenError("the stream ended before the job's terminal event")

    async def _pause_before_resume(self, broken: _LinkBrokenError) -> None:
        self._failures += 1
        policy = self._config.retry
        if self._failures >= policy.max_attempts:
            self._end()
            raise StreamInterruptedError(
                f"{self._name or 'job'}: link lost after event {self._last_sequence}"
                f" and {self._failures} tries to resume failed: {broken}",
                generation=self._name,
                last_sequence=self._last_sequence,
            ) from broken.__cause__
        delay = policy.backoff(self._failures)
        if self._deadline is not None:
            delay = min(delay, max(0.0, self._deadline - time.monotonic()))
        await asyncio.sleep(delay)
        self._resumes += 1

    def _drop_call(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _end(self) -> None:
        self._finished = True
        self._drop_call()
