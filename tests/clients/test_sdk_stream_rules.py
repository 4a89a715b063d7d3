"""GenerationStream's promises against a real gRPC server that misbehaves on purpose:
duplicates are dropped, a clean end before the terminal event resumes from the last
sequence, a gap raises SequenceGapError, errors come out typed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from scriptgen import (
    Client,
    ClientConfig,
    GenerationStream,
    NotFoundError,
    RetryPolicy,
    ScriptAssembler,
    ScriptMismatchError,
    SequenceGapError,
    StreamInterruptedError,
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

    async def GenerateScript(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.GenerateScriptRequest, context: Context
    ) -> AsyncIterator[generation_service_pb2.GenerateScriptResponse]:
        self.generate_calls += 1
        for event in self.first_call:
            yield generation_service_pb2.GenerateScriptResponse(event=event)

    async def StreamGenerationEvents(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.StreamGenerationEventsRequest, context: Context
    ) -> AsyncIterator[generation_service_pb2.StreamGenerationEventsResponse]:
        self.resume_requests.append((request.name, request.after_sequence))
        if request.name != JOB:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
        start = max(0, request.after_sequence - self.overlap)
        for event in JOB_EVENTS[start:]:
            yield generation_service_pb2.StreamGenerationEventsResponse(event=event)

    async def GetGeneration(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.GetGenerationRequest, context: Context
    ) -> generation_service_pb2.GetGenerationResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

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
