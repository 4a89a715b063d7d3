"""GenerationStream's promises against a real gRPC server that misbehaves on purpose:
duplicates are dropped, a clean end before the terminal event resumes from the last
sequence, a gap raises SequenceGapError, errors come out typed, refusals the server
explains are retried no sooner than their RetryInfo asks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from scriptgen import (
    ERROR_DOMAIN,
    Client,
    ClientClosedError,
    ClientConfig,
    GenerationStream,
    NotFoundError,
    ResourceExhaustedError,
    RetryPolicy,
    ScriptAssembler,
    ScriptMismatchError,
    SequenceGapError,
    StreamInterruptedError,
    UnavailableError,
)
from scriptgen.v1 import generation_pb2, generation_service_pb2, generation_service_pb2_grpc

Event = generation_pb2.GenerationEvent
Context = grpc.aio.ServicerContext[Any, Any]
JOB = "generations/scripted"


def _event(sequence: int, kind: str, text: str = "", offset: int = 0) -> Event:
    event = Event(generation=JOB, sequence=sequence)
    if kind == "queued":
        event.queued.parent = "projects/p"
    elif kind == "delta":
        event.text_delta.text = text
        event.text_delta.offset = offset
    elif kind == "completed":
        event.completed.episode.name = "projects/p/episodes/1"
        event.completed.episode.script = "INT. HOUSE - NIGHT"
    elif kind == "heartbeat":
        event.heartbeat.SetInParent()
    return event


def refusal(
    code: grpc.StatusCode, reason: str | None = None, retry_seconds: float | None = None
) -> tuple[grpc.StatusCode, bytes]:
    """An abort as the core sends one: `grpc-status-details-bin` with ErrorInfo and RetryInfo."""
    status = status_pb2.Status(code=code.value[0], message=f"refused ({reason})")
    if reason is not None:
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    if retry_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=retry_seconds))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return code, status.SerializeToString()


Refusal = tuple[grpc.StatusCode, bytes]


async def _abort(context: Context, refused: Refusal) -> None:
    code, details = refused
    await context.abort(
        code, "refused on purpose", trailing_metadata=(("grpc-status-details-bin", details),)
    )


#: The whole job: queued, three deltas spelling the script, completed.
JOB_EVENTS = [
    _event(1, "queued"),
    _event(2, "delta", "INT. ", 0),
    _event(3, "delta", "HOUSE", 5),
    _event(4, "heartbeat"),
    _event(5, "delta", " - NIGHT", 10),
    _event(6, "completed"),
]


class ScriptedGenerations(generation_service_pb2_grpc.GenerationServiceServicer):
    """GenerateScript plays `first_call`; StreamGenerationEvents replays JOB_EVENTS
    from `after_sequence - overlap`, so resumed streams start with duplicates."""

    def __init__(self, first_call: Sequence[Event], *, overlap: int = 0) -> None:
        self.first_call = first_call
        self.overlap = overlap
        self.generate_calls = 0
        self.resume_requests: list[tuple[str, int]] = []
        self.get_calls = 0
        #: Refusals the next calls of each kind end with, in order (then they answer).
        self.generate_refusals: list[Refusal] = []
        self.resume_refusals: list[Refusal] = []
        self.get_refusals: list[Refusal] = []
        #: What GetGeneration answers once its refusals are used up (None: UNIMPLEMENTED).
        self.generation: generation_pb2.Generation | None = None
        #: How many of the next StreamGenerationEvents calls end at once, with no event.
        self.empty_resumes = 0
        #: Seconds GetGeneration takes to answer, and set once it has been asked.
        self.get_seconds = 0.0
        self.get_asked = asyncio.Event()

    async def GenerateScript(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.GenerateScriptRequest, context: Context
    ) -> AsyncIterator[generation_service_pb2.GenerateScriptResponse]:
        self.generate_calls += 1
        if self.generate_refusals:
            await _abort(context, self.generate_refusals.pop(0))
        for event in self.first_call:
            yield generation_service_pb2.GenerateScriptResponse(event=event)

    async def StreamGenerationEvents(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.StreamGenerationEventsRequest, context: Context
    ) -> AsyncIterator[generation_service_pb2.StreamGenerationEventsResponse]:
        self.resume_requests.append((request.name, request.after_sequence))
        if self.resume_refusals:
            await _abort(context, self.resume_refusals.pop(0))
        if request.name != JOB:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
        if self.empty_resumes:
            self.empty_resumes -= 1
            return
        start = max(0, request.after_sequence - self.overlap)
        for event in JOB_EVENTS[start:]:
            yield generation_service_pb2.StreamGenerationEventsResponse(event=event)

    async def GetGeneration(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.GetGenerationRequest, context: Context
    ) -> generation_service_pb2.GetGenerationResponse:
        self.get_calls += 1
        self.get_asked.set()
        await asyncio.sleep(self.get_seconds)
        if self.get_refusals:
            await _abort(context, self.get_refusals.pop(0))
        if self.generation is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")
        return generation_service_pb2.GetGenerationResponse(generation=self.generation)

    async def ListGenerations(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.ListGenerationsRequest, context: Context
    ) -> generation_service_pb2.ListGenerationsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def CancelGeneration(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.CancelGenerationRequest, context: Context
    ) -> generation_service_pb2.CancelGenerationResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")


async def _serve(servicer: ScriptedGenerations) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    generation_service_pb2_grpc.add_GenerationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _drain(stream: GenerationStream, sequences: list[int]) -> None:
    async with stream:
        async for event in stream:
            sequences.append(event.sequence)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedGenerations, Client]]:
    servicer = ScriptedGenerations(JOB_EVENTS)
    server, target = await _serve(servicer)
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    try:
        async with Client(target, ClientConfig(retry=retry)) as client:
            yield servicer, client
    finally:
        await server.stop(None)


async def test_a_clean_end_before_the_terminal_event_resumes_after_the_last_sequence(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.first_call = JOB_EVENTS[:3]
    servicer.overlap = 2  # the replay repeats events 2 and 3; they must not reach the caller
    async with client.generate("projects/p", "Pilot") as stream:
        events = [event async for event in stream]
    assert [event.sequence for event in events] == [1, 2, 3, 4, 5, 6]
    assert servicer.generate_calls == 1
    assert servicer.resume_requests == [(JOB, 3)]
    assert stream.resumes == 1
    assembler = ScriptAssembler()
    for event in events:
        assembler.feed(event)
    assert assembler.result().script == "INT. HOUSE - NIGHT"


async def test_a_stream_that_ends_before_any_event_repeats_generate_with_the_same_request_id(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.first_call = []
    # Every GenerateScript ends at once; after max_attempts the stream gives up.
    stream = client.generate("projects/p", "Pilot", request_id="pilot-1")
    with pytest.raises(StreamInterruptedError, match="tries to resume failed"):
        await _drain(stream, [])
    assert servicer.generate_calls == 3
    assert servicer.resume_requests == []
    assert stream.request_id == "pilot-1"


async def test_a_gap_raises_sequence_gap_error(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.first_call = [JOB_EVENTS[0], JOB_EVENTS[1], JOB_EVENTS[3]]
    seen: list[int] = []
    stream = client.generate("projects/p", "Pilot")
    with pytest.raises(SequenceGapError) as raised:
        await _drain(stream, seen)
    assert seen == [1, 2]
    assert raised.value.last_sequence == 2
    assert raised.value.received == 4
    assert raised.value.generation == JOB
    assert stream.finished


async def test_following_an_unknown_job_raises_not_found(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    _, client = scripted
    stream = client.follow("generations/nope")
    with pytest.raises(NotFoundError, match="generations/nope not found"):
        await _drain(stream, [])
    assert stream.finished


def test_the_assembler_rejects_a_delta_that_does_not_continue_the_script() -> None:
    assembler = ScriptAssembler()
    assembler.feed(JOB_EVENTS[1])
    with pytest.raises(ScriptMismatchError, match="starts at offset 10"):
        assembler.feed(JOB_EVENTS[4])


def test_a_partial_assembler_starts_where_its_first_delta_starts() -> None:
    assembler = ScriptAssembler(partial=True)
    for event in JOB_EVENTS[2:]:
        assembler.feed(event)
    result = assembler.result()
    assert result.script == "HOUSE - NIGHT"
    assert result.outcome == "completed"
    assert result.episode is not None
    assert result.episode.name == "projects/p/episodes/1"
    assert result.event_count == 4


def test_the_result_of_an_unfinished_job_is_an_error() -> None:
    assembler = ScriptAssembler()
    assembler.feed(JOB_EVENTS[0])
    assert not assembler.finished
    with pytest.raises(ValueError, match="not ended"):
        assembler.result()


def _retrying(attempts: int, **policy: float) -> ClientConfig:
    return ClientConfig(
        retry=RetryPolicy(max_attempts=attempts, initial_backoff=0.01, max_backoff=0.02, **policy)
    )


async def test_an_explained_unavailable_on_resume_waits_its_retry_info_then_resumes(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.first_call = JOB_EVENTS[:3]
    unavailable = refusal(grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", retry_seconds=0.3)
    servicer.resume_refusals = [unavailable, unavailable]
    async with Client(client.target, _retrying(5)) as patient:
        started = time.monotonic()
        async with patient.generate("projects/p", "Pilot") as stream:
            sequences = [event.sequence async for event in stream]
        elapsed = time.monotonic() - started
    assert sequences == [1, 2, 3, 4, 5, 6]
    assert servicer.resume_requests == [(JOB, 3)] * 3
    assert elapsed >= 0.6, "each retry waited the 0.3 s the server asked for, not 10 ms"


async def test_resuming_that_gives_up_on_an_explained_unavailable_keeps_the_typed_cause(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.first_call = JOB_EVENTS[:3]
    servicer.resume_refusals = [
        refusal(grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", retry_seconds=0.05)
    ] * 10
    stream = client.generate("projects/p", "Pilot")
    with pytest.raises(StreamInterruptedError) as raised:
        await _drain(stream, [])
    assert raised.value.generation == JOB
    assert raised.value.last_sequence == 3
    cause = raised.value.__cause__
    assert isinstance(cause, UnavailableError)
    assert cause.reason == "SHUTTING_DOWN"
    assert cause.retry_delay == timedelta(milliseconds=50)
    assert isinstance(cause.__cause__, grpc.aio.AioRpcError)


async def test_an_explained_unavailable_before_the_first_event_is_raised_typed(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.generate_refusals = [
        refusal(grpc.StatusCode.UNAVAILABLE, "PROVIDERS_UNAVAILABLE", retry_seconds=0.2)
    ] * 10
    started = time.monotonic()
    stream = client.generate("projects/p", "Pilot", request_id="pilot-1")
    with pytest.raises(UnavailableError) as raised:
        await _drain(stream, [])
    elapsed = time.monotonic() - started
    assert raised.value.reason == "PROVIDERS_UNAVAILABLE"
    assert raised.value.retry_delay == timedelta(seconds=0.2)
    assert servicer.generate_calls == 3  # the retry policy's max_attempts
    assert elapsed >= 0.4, "two waits of the server's 0.2 s"
    assert stream.finished


async def test_a_retry_info_beyond_max_retry_delay_ends_the_retries_at_once(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.generate_refusals = [
        refusal(grpc.StatusCode.UNAVAILABLE, "PROVIDERS_UNAVAILABLE", retry_seconds=30)
    ]
    async with Client(client.target, _retrying(5, max_retry_delay=1.0)) as impatient:
        started = time.monotonic()
        with pytest.raises(UnavailableError) as raised:
            await _drain(impatient.generate("projects/p", "Pilot"), [])
    assert time.monotonic() - started < 1.0
    assert raised.value.retry_delay == timedelta(seconds=30)
    assert servicer.generate_calls == 1


async def test_a_retry_info_past_the_stream_deadline_ends_the_retries_at_once(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.generate_refusals = [
        refusal(grpc.StatusCode.UNAVAILABLE, "PROVIDERS_UNAVAILABLE", retry_seconds=5)
    ]
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        await _drain(client.generate("projects/p", "Pilot", deadline=1.0), [])
    assert time.monotonic() - started < 1.0
    assert servicer.generate_calls == 1


async def test_resource_exhausted_on_a_resume_is_retried_but_not_on_the_first_call(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.first_call = JOB_EVENTS[:3]
    servicer.resume_refusals = [
        refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS", retry_seconds=0.3)
    ]
    started = time.monotonic()
    sequences: list[int] = []
    await _drain(client.generate("projects/p", "Pilot"), sequences)
    assert sequences == [1, 2, 3, 4, 5, 6]
    assert len(servicer.resume_requests) == 2
    assert time.monotonic() - started >= 0.3

    servicer.generate_refusals = [
        refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVER_CAPACITY", retry_seconds=0.3)
    ]
    calls_before = servicer.generate_calls
    with pytest.raises(ResourceExhaustedError) as raised:
        await _drain(client.generate("projects/p", "Pilot"), [])
    assert raised.value.reason == "OVER_CAPACITY"
    assert servicer.generate_calls == calls_before + 1


async def test_following_an_ended_job_from_its_last_sequence_ends_without_retries(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.generation = generation_pb2.Generation(
        name=JOB, state=generation_pb2.GENERATION_STATE_SUCCEEDED, last_sequence=6
    )
    async with client.follow(JOB, after_sequence=6) as stream:
        assert [event async for event in stream] == []
    assert stream.finished
    assert stream.resumes == 0
    assert servicer.resume_requests == [(JOB, 6)]
    assert servicer.get_calls == 1


async def test_an_empty_resume_of_a_stream_that_handed_out_events_resumes_again(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    # The job's record already says it ended (a core writes its state just before its
    # terminal event), but this stream has handed out events and not the terminal one:
    # an empty re-opened call is a broken link, not the end.
    servicer, client = scripted
    servicer.first_call = JOB_EVENTS[:3]
    servicer.empty_resumes = 1
    servicer.generation = generation_pb2.Generation(
        name=JOB, state=generation_pb2.GENERATION_STATE_SUCCEEDED, last_sequence=3
    )
    sequences: list[int] = []
    await _drain(client.generate("projects/p", "Pilot"), sequences)
    assert sequences == [1, 2, 3, 4, 5, 6]
    assert servicer.resume_requests == [(JOB, 3), (JOB, 3)]
    assert servicer.get_calls == 0


async def test_closing_the_client_while_a_stream_asks_for_its_job_raises_client_closed(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.generation = generation_pb2.Generation(
        name=JOB, state=generation_pb2.GENERATION_STATE_SUCCEEDED, last_sequence=6
    )
    servicer.get_seconds = 5.0
    stream = client.follow(JOB, after_sequence=6)
    reading = asyncio.create_task(_drain(stream, []))
    async with asyncio.timeout(5):
        await servicer.get_asked.wait()
    await client.close()
    with pytest.raises(ClientClosedError):
        await reading
    assert stream.finished


async def test_resource_exhausted_before_the_first_event_is_raised_on_a_repeat_too(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    # The first GenerateScript broke before any event; its repeat is refused for a full
    # core: no job of this stream holds a slot there, so the refusal is the caller's.
    servicer, client = scripted
    servicer.generate_refusals = [
        refusal(grpc.StatusCode.UNAVAILABLE),
        refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_JOBS", retry_seconds=0.3),
    ]
    with pytest.raises(ResourceExhaustedError) as raised:
        await _drain(client.generate("projects/p", "Pilot"), [])
    assert raised.value.reason == "TOO_MANY_JOBS"
    assert servicer.generate_calls == 2


async def test_unary_retries_wait_the_servers_retry_info(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.generation = generation_pb2.Generation(name=JOB)
    servicer.get_refusals = [
        refusal(grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE", retry_seconds=0.3)
    ] * 2
    started = time.monotonic()
    job = await client.get_generation(JOB)
    assert job.name == JOB
    assert servicer.get_calls == 3
    assert time.monotonic() - started >= 0.6, "two waits of 0.3 s, not of 10 ms"


async def test_a_unary_retry_info_past_the_deadline_is_raised_at_once(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.generation = generation_pb2.Generation(name=JOB)
    servicer.get_refusals = [
        refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", retry_seconds=3)
    ]
    started = time.monotonic()
    with pytest.raises(ResourceExhaustedError) as raised:
        await client.get_generation(JOB, deadline=1.0)
    assert time.monotonic() - started < 1.0
    assert raised.value.reason == "RATE_LIMITED"
    assert servicer.get_calls == 1


async def test_malformed_status_details_are_ignored(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    servicer.get_refusals = [(grpc.StatusCode.NOT_FOUND, b"\xff\xff\xff not a Status")]
    with pytest.raises(NotFoundError) as raised:
        await client.get_generation(JOB)
    assert raised.value.status is None
    assert raised.value.details == []
    assert raised.value.reason is None


async def test_a_detail_whose_bytes_do_not_parse_is_kept_packed(
    scripted: tuple[ScriptedGenerations, Client],
) -> None:
    servicer, client = scripted
    status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="gone")
    broken = any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\xff\xff\xff")
    status.details.append(broken)
    servicer.get_refusals = [(grpc.StatusCode.NOT_FOUND, status.SerializeToString())]
    with pytest.raises(NotFoundError) as raised:
        await client.get_generation(JOB)
    assert raised.value.details == [broken]
    assert raised.value.reason is None
