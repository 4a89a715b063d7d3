"""A job's event stream that survives broken links: every event exactly once, in order.

`GenerationStream` starts a job (GenerateScript) or attaches to one
(StreamGenerationEvents). When the link breaks — UNAVAILABLE, a stream that
ends without a terminal event, or silence beyond the idle timeout — it
re-attaches from the last sequence it handed out, with backoff:

* before the first event the job's name is unknown, so it repeats
  GenerateScript with the same `request_id`, which the core answers with the
  same job's stream from sequence 1;
* after that it calls StreamGenerationEvents(name, after_sequence=last).

A refusal the server explains (an ErrorInfo reason or a RetryInfo in the
status details) is retried too, never sooner than its RetryInfo asks: an
UNAVAILABLE at any time (SHUTTING_DOWN, PROVIDERS_UNAVAILABLE), and a
RESOURCE_EXHAUSTED with a RetryInfo on a re-opened call (TOO_MANY_STREAMS,
OVER_CAPACITY, RATE_LIMITED: the dead call may still count on the server).
The first call's RESOURCE_EXHAUSTED is raised at once: admission control's
refusal is the caller's to handle. A StreamGenerationEvents call that ends
cleanly without an event is checked with GetGeneration: a job that has ended
with nothing after the last sequence ends the stream normally.

Replayed duplicates are dropped; a sequence that skips ahead raises
`SequenceGapError`, because a screenplay with a hole is worse than an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn, TypeAlias

import grpc
import grpc.aio

from scriptgen._config import ClientConfig
from scriptgen._errors import (
    ClientClosedError,
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


_ENDED_STATES = frozenset(
    {
        generation_pb2.GENERATION_STATE_SUCCEEDED,
        generation_pb2.GENERATION_STATE_FAILED,
        generation_pb2.GENERATION_STATE_CANCELLED,
    }
)


class _LinkBrokenError(Exception):
    """Internal: the current call can no longer deliver events; resume."""

    def __init__(self, message: str, error: RPCError | None = None) -> None:
        super().__init__(message)
        #: The failed call's typed error; None for silence or an early clean end.
        self.error = error


class GenerationStream:
    """Async iterator of a job's `GenerationEvent`s, from the first unseen one to the terminal one.

    Use it as `async with client.generate(...) as stream: async for event in stream: ...`
    so the underlying call is cancelled when the caller stops early. Leaving
    early does not cancel the job at once, but a job started without
    `detach=True` is cancelled by the core once nobody has followed it for its
    abandon time (`SCRIPTGEN_ABANDON_AFTER_SECONDS`, 30 s by default);
    `Client.cancel_generation(stream.name)` cancels it now. `metadata` is sent
    with every call of the stream (the client's, its API key included).

    When resuming gives up, the error is `StreamInterruptedError` (its
    `__cause__` the last call's typed `RPCError`), or, before the first event
    (no job name to resume with), that `RPCError` itself, e.g. an
    `UnavailableError` with its `reason`.
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
        closed: Callable[[], bool] = lambda: False,
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
        #: Where the stream began: only a stream that has handed out nothing since may take
        #: an empty end for a job that had ended before it (`_ended_before_us`).
        self._first_sequence = after_sequence
        self._metadata = metadata
        #: Whether the client was closed (its calls are then cancelled under the stream).
        self._client_closed = closed
        self._deadline = None if deadline is None else time.monotonic() + deadline
        self._call: _EventCall | None = None
        #: Calls opened so far: a RESOURCE_EXHAUSTED of the first is final.
        self._calls = 0
        #: Responses the current call has delivered.
        self._received = 0
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
        """Whether the stream has ended: its terminal event, an error, `aclose()`, or a
        followed job that had ended before the stream's first sequence."""
        return self._finished

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> generation_pb2.GenerationEvent:
        while not self._finished:
            try:
                event = await self._next_from_call()
            except _LinkBrokenError as broken:
                if self._finished:
                    break  # aclose() from another task cancelled the call
                self._drop_call()
                await self._pause_before_resume(broken)
                continue
            except BaseException:
                # Cancellation of the caller keeps the stream resumable; errors end it.
                self._drop_call()
                raise
            if event is None:
                self._end()  # the job had ended before this stream's first sequence
                break
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
        """Stop reading: cancel the call.

        The job is not cancelled by this; but one started without `detach=True`
        is cancelled by the core once nobody has followed it for its abandon
        time (`SCRIPTGEN_ABANDON_AFTER_SECONDS`, 30 s by default).
        """
        self._end()

    async def collect(self) -> GenerationResult:
        """Read the remaining events and return how the job ended with its script.

        The script is assembled from the events this call reads. On a stream
        that starts after sequence 0 (`follow(name, after_sequence=k)`, or
        events already read), the result holds the text from the first delta
        read here on, and `event_count` counts only the events read here.
        A stream that ends without a terminal event (following a job that had
        already ended) raises ValueError.
        """
        assembler = ScriptAssembler(partial=self._last_sequence > 0)
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
        try:
            if self._name:
                return self._stub.StreamGenerationEvents(
                    generation_service_pb2.StreamGenerationEventsRequest(
                        name=self._name, after_sequence=self._last_sequence
                    ),
                    timeout=timeout,
                    metadata=self._metadata,
                )
            assert self._request is not None
            return self._stub.GenerateScript(
                self._request, timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.UsageError as closed:
            self._end()
            raise ClientClosedError(f"the client is closed: {closed}") from closed

    async def _next_from_call(self) -> generation_pb2.GenerationEvent | None:
        """The current call's next event; None when the job had already ended."""
        if self._call is None:
            self._call = self._open()
            self._calls += 1
            self._received = 0
        call = self._call
        try:
            async with asyncio.timeout(self._config.stream_idle_timeout):
                response = await call.read()
        except TimeoutError as silence:
            raise _LinkBrokenError(
                f"no event for {self._config.stream_idle_timeout:g}s (heartbeats included)"
            ) from silence
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the caller is being cancelled
            self._raise_if_closed()
            # gRPC cancelled the call under us: resume as for any broken link.
            raise _LinkBrokenError("the call was cancelled") from None
        except grpc.aio.AioRpcError as raw:
            error = RPCError.from_call(raw)
            if self._resumable(error):
                raise _LinkBrokenError(error.describe(), error) from raw
            self._end()
            raise error from raw
        if isinstance(
            response,
            generation_service_pb2.GenerateScriptResponse
            | generation_service_pb2.StreamGenerationEventsResponse,
        ):
            self._received += 1
            return response.event
        if (
            self._name
            and self._received == 0
            and self._last_sequence == self._first_sequence
            and await self._ended_before_us()
        ):
            return None
        # A clean end before the terminal event: the server went away politely.
        raise _LinkBrokenError("the stream ended before the job's terminal event")

    def _resumable(self, error: RPCError) -> bool:
        if error.code == grpc.StatusCode.UNAVAILABLE:
            return True
        # Re-opened after a broken link to a job it knows, the dead call may still hold a slot
        # on the server. Before the first event no job may hold one: a refusal then (e.g.
        # TOO_MANY_JOBS) is the caller's to handle, as on the first call.
        return (
            error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            and error.retry_delay is not None
            and self._calls > 1
            and bool(self._name)
        )

    async def _ended_before_us(self) -> bool:
        """Whether the job has ended with no event after `last_sequence` (GetGeneration says)."""
        timeout = self._config.deadline
        if self._deadline is not None:
            timeout = min(timeout, max(0.0, self._deadline - time.monotonic()))
        try:
            response = await self._stub.GetGeneration(
                generation_service_pb2.GetGenerationRequest(name=self._name),
                timeout=timeout,
                metadata=self._metadata,
            )
        except grpc.aio.UsageError as closed:
            self._end()
            raise ClientClosedError(f"the client is closed: {closed}") from closed
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the caller is being cancelled
            self._raise_if_closed()
            return False
        except grpc.aio.AioRpcError:
            return False  # resume as for any early end; the re-opened call tells the rest
        job = response.generation
        return job.state in _ENDED_STATES and job.last_sequence <= self._last_sequence

    def _raise_if_closed(self) -> None:
        if self._client_closed():
            self._end()
            raise ClientClosedError("the client was closed while the stream was open") from None

    async def _pause_before_resume(self, broken: _LinkBrokenError) -> None:
        self._raise_if_closed()
        self._failures += 1
        policy = self._config.retry
        error = broken.error
        delay = policy.retry_delay(self._failures, error.retry_delay if error else None)
        remaining = None if self._deadline is None else self._deadline - time.monotonic()
        asked = error.retry_delay.total_seconds() if error and error.retry_delay else 0.0
        if (
            self._failures >= policy.max_attempts
            or delay is None  # the server asks for a longer wait than the policy allows
            or (remaining is not None and 0 < remaining <= asked)  # the deadline comes first
        ):
            self._give_up(broken)
        if remaining is not None:
            delay = min(delay, max(0.0, remaining))
        await asyncio.sleep(delay)
        self._resumes += 1

    def _give_up(self, broken: _LinkBrokenError) -> NoReturn:
        self._end()
        error = broken.error
        if error is not None and not self._name:
            # No event yet, so no job to resume: the call's own error says what happened.
            raise error from broken.__cause__
        if error is not None:
            error.__cause__ = broken.__cause__
        raise StreamInterruptedError(
            f"{self._name or 'job'}: link lost after event {self._last_sequence}"
            f" and {self._failures} tries to resume failed: {broken}",
            generation=self._name,
            last_sequence=self._last_sequence,
        ) from (error if error is not None else broken.__cause__)

    def _drop_call(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _end(self) -> None:
        self._finished = True
        self._drop_call()
