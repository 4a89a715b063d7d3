"""RelayService against a real core: many streams on one call, each one a real call."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from scriptgen import _relay_cadence
from scriptgen.v1 import (
    generation_pb2,
    generation_service_pb2,
    relay_service_pb2,
    relay_service_pb2_grpc,
)

from server import Core, SyntheticConfig
from server.services import relay
from tests.conftest import CoreFactory
from tests.gateway.conftest import eventually, sample
from tests.server.rpc import connect

gs = generation_service_pb2
rs = relay_service_pb2


@dataclass
class Streams:
    """What a Relay call delivered, by stream number."""

    events: dict[int, list[generation_pb2.GenerationEvent]] = field(
        default_factory=lambda: defaultdict(list)
    )
    headers: dict[int, dict[str, str | bytes]] = field(default_factory=dict)
    ends: dict[int, rs.RelayEnd] = field(default_factory=dict)
    #: Every frame's (stream, kind), in arrival order.
    order: list[tuple[int, str]] = field(default_factory=list)

    def take(self, response: rs.RelayResponse) -> None:
        for frame in response.frames:
            kind = frame.WhichOneof("kind")
            assert kind is not None
            self.order.append((frame.stream, kind))
            assert frame.stream not in self.ends, "a frame after the stream's end"
            if kind == "event":
                self.events[frame.stream].append(frame.event)
            elif kind == "headers":
                self.headers[frame.stream] = {m.key: m.value for m in frame.headers.metadata}
            else:
                self.ends[frame.stream] = frame.end


async def _read_until(
    call: aio.StreamStreamCall[rs.RelayRequest, rs.RelayResponse],
    streams: Streams,
    done: Callable[[], bool],
) -> None:
    """Read the call's responses into `streams` until `done()`."""
    async with asyncio.timeout(30):
        while not done():
            response = await call.read()
            assert response is not aio.EOF, "the call ended before its streams"
            assert isinstance(response, rs.RelayResponse)
            streams.take(response)


async def _read_until_ended(
    call: aio.StreamStreamCall[rs.RelayRequest, rs.RelayResponse],
    streams: Streams,
    numbers: set[int],
) -> None:
    await _read_until(call, streams, lambda: numbers <= streams.ends.keys())


def _generate(number: int, parent: str, title: str, **fields: Any) -> rs.RelayOpen:
    return rs.RelayOpen(
        stream=number,
        generate_script=gs.GenerateScriptRequest(parent=parent, title=title, **fields),
    )


def _violations(end: rs.RelayEnd) -> dict[str, str]:
    for key, value in ((m.key, m.value) for m in end.trailers):
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return {v.field: v.description for v in bad.field_violations}
    raise AssertionError("no BadRequest detail")


async def test_many_streams_on_one_call_each_get_their_own_job_in_order(
    core_target: str,
) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        relay = relay_service_pb2_grpc.RelayServiceStub(rpc.channel)
        call = relay.Relay()
        await call.write(
            rs.RelayRequest(opens=[_generate(n, project.name, f"Ep {n}") for n in range(1, 9)])
        )
        streams = Streams()
        await _read_until_ended(call, streams, set(range(1, 9)))
        await call.done_writing()
        assert await call.read() is aio.EOF
        assert await call.code() == grpc.StatusCode.OK

        # The frames of several streams shared responses, interleaved.
        assert len({n for n, _ in streams.order[:16]}) > 1
        names = set()
        for number in range(1, 9):
            events = streams.events[number]
            assert streams.ends[number].code == 0
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert events[-1].WhichOneof("kind") == "completed"
            names.add(events[0].generation)
            # Exactly the job's log, as GenerateScript itself would have streamed it.
            assert [e.SerializeToString() for e in events] == [
                e.SerializeToString() for e in await rpc.follow(events[0].generation)
            ]
            script = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
            assert script == events[-1].completed.episode.script
        assert len(names) == 8


async def test_follow_streams_resume_after_a_sequence(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name)
        call = relay_service_pb2_grpc.RelayServiceStub(rpc.channel).Relay()
        name = events[0].generation
        await call.write(
            rs.RelayRequest(
                opens=[
                    rs.RelayOpen(
                        stream=7,
                        stream_generation_events=gs.StreamGenerationEventsRequest(
                            name=name, after_sequence=3
                        ),
                    ),
                    rs.RelayOpen(
                        stream=8,
                        stream_generation_events=gs.StreamGenerationEventsRequest(
                            name="generations/nope", after_sequence=0
                        ),
                    ),
                ]
            )
        )
        streams = Streams()
        await _read_until_ended(call, streams, {7, 8})
        call.cancel()
    assert [e.sequence for e in streams.events[7]] == [e.sequence for e in events[3:]]
    assert streams.ends[7].code == 0
    assert streams.ends[8].code == grpc.StatusCode.NOT_FOUND.value[0]
    assert 8 not in streams.events


async def test_a_bad_open_ends_that_stream_with_the_field_named_and_the_call_goes_on(
    core_target: str,
) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        call = relay_service_pb2_grpc.RelayServiceStub(rpc.channel).Relay()
        await call.write(
            rs.RelayRequest(
                opens=[
                    _generate(0, project.name, "Zero"),
                    rs.RelayOpen(stream=2),
                    rs.RelayOpen(
                        stream=3,
                        metadata=[rs.RelayMetadata(key=f"k{n}", value=b"v") for n in range(65)],
                        generate_script=gs.GenerateScriptRequest(parent=project.name, title="M"),
                    ),
                    _generate(4, project.name, ""),
                    _generate(5, project.name, "Fine"),
                ]
            )
        )
        streams = Streams()
        await _read_until_ended(call, streams, {0, 2, 3, 4, 5})
        call.cancel()
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert {n: streams.ends[n].code for n in (0, 2, 3, 4)} == dict.fromkeys((0, 2, 3, 4), invalid)
    assert "stream" in _violations(streams.ends[0])
    assert "call" in _violations(streams.ends[2])
    assert "metadata" in _violations(streams.ends[3])
    assert "title" in _violations(streams.ends[4])  # the servicer's own validation
    assert streams.ends[5].code == 0
    assert streams.events[5][-1].WhichOneof("kind") == "completed"


@pytest.fixture
async def slow_core(start_core: CoreFactory) -> Core:
    """A core whose writer waits 30 s for its first token, with room for 2 streams."""
    return await start_core(
        SyntheticConfig(first_token_seconds=30.0, tokens_per_second=50.0),
        max_streams=2,
        shutdown_grace_seconds=0.0,
    )


async def test_cancelling_a_stream_cancels_its_call_and_admission_counts_relayed_streams(
    slow_core: Core,
) -> None:
    target = f"127.0.0.1:{slow_core.grpc_port}"
    cancelled = {"method": "GenerateScript", "code": "CANCELLED"}
    before = sample(slow_core, "scriptgen_grpc_requests_total", cancelled)
    async with connect(target) as rpc:
        project = await rpc.create_project()
        call = relay_service_pb2_grpc.RelayServiceStub(rpc.channel).Relay()
        opens = [_generate(n, project.name, f"Ep {n}") for n in (1, 2, 3)]
        await call.write(rs.RelayRequest(opens=opens))
        streams = Streams()
        # The third is over the core's two streams: refused at once.
        await _read_until_ended(call, streams, {3})
        assert streams.ends[3].code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        await _read_until(call, streams, lambda: bool(streams.events[1] and streams.events[2]))
        await call.write(rs.RelayRequest(cancels=[1]))
        await eventually(
            lambda: sample(slow_core, "scriptgen_grpc_requests_total", cancelled) == before + 1,
            "the core to count the stream cancelled",
        )
        # Its slot is free again: a new stream is admitted.
        await call.write(rs.RelayRequest(opens=[_generate(4, project.name, "Ep 4")]))
        await _read_until(call, streams, lambda: bool(streams.events[4]))
        assert 4 not in streams.ends
        assert 1 not in streams.ends  # a cancelled stream gets no end frame
        call.cancel()


async def test_a_deadline_ends_the_stream_with_deadline_exceeded(slow_core: Core) -> None:
    target = f"127.0.0.1:{slow_core.grpc_port}"
    async with connect(target) as rpc:
        project = await rpc.create_project()
        call = relay_service_pb2_grpc.RelayServiceStub(rpc.channel).Relay()
        opened = _generate(1, project.name, "Short")
        opened.timeout_seconds = 0.3
        await call.write(rs.RelayRequest(opens=[opened]))
        streams = Streams()
        await _read_until_ended(call, streams, {1})
        call.cancel()
    assert streams.ends[1].code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert streams.events[1][0].WhichOneof("kind") == "queued"


async def test_an_open_and_its_cancel_in_one_request_leave_nothing_behind(
    slow_core: Core,
) -> None:
    target = f"127.0.0.1:{slow_core.grpc_port}"
    async with connect(target) as rpc:
        project = await rpc.create_project()
        call = relay_service_pb2_grpc.RelayServiceStub(rpc.channel).Relay()
        await call.write(rs.RelayRequest(opens=[_generate(1, project.name, "Gone")], cancels=[1]))
        await call.done_writing()
        # The stream never ran, so the call ends as soon as the gateway is done writing.
        async with asyncio.timeout(5):
            while (response := await call.read()) is not aio.EOF:
                assert isinstance(response, rs.RelayResponse)
                assert all(frame.stream != 1 for frame in response.frames)
        assert await call.code() == grpc.StatusCode.OK
    assert (
        sample(slow_core, "scriptgen_grpc_requests_total", {"method": "Relay", "code": "OK"}) == 1
    )


async def test_a_stopping_core_refuses_new_streams_and_ends_its_relay_calls(
    start_core: CoreFactory,
) -> None:
    core = await start_core(SyntheticConfig(first_token_seconds=0.0, tokens_per_second=20.0))
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = relay_service_pb2_grpc.RelayServiceStub(rpc.channel).Relay()
        await call.write(rs.RelayRequest(opens=[_generate(1, project.name, "Running")]))
        streams = Streams()
        await _read_until(call, streams, lambda: bool(streams.events[1]))
        stopping = asyncio.create_task(core.stop(grace=1.0))
        await asyncio.sleep(0.2)
        await call.write(rs.RelayRequest(opens=[_generate(2, project.name, "Late")]))
        # The late one is refused; the running one ends with its job; then the call
        # ends by itself, without the gateway finishing its side.
        async with asyncio.timeout(10):
            while (response := await call.read()) is not aio.EOF:
                assert isinstance(response, rs.RelayResponse)
                streams.take(response)
        assert await call.code() == grpc.StatusCode.OK
        await stopping
    assert streams.ends[2].code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert streams.ends[1].code == 0
    assert streams.events[1][-1].WhichOneof("kind") in ("completed", "cancelled")


async def test_frames_soon_after_a_response_wait_for_the_interval_and_go_together(
    start_core: CoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    interval = 1.0
    monkeypatch.setattr(_relay_cadence, "WRITE_INTERVAL_SECONDS", interval)
    core = await start_core(
        SyntheticConfig(first_token_seconds=30.0, tokens_per_second=50.0),
        shutdown_grace_seconds=0.0,
    )
    loop = asyncio.get_running_loop()
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = relay_service_pb2_grpc.RelayServiceStub(rpc.channel).Relay()
        sent = loop.time()
        await call.write(rs.RelayRequest(opens=[_generate(1, project.name, "Ep 1")]))
        first = await call.read()
        first_at = loop.time()
        assert isinstance(first, rs.RelayResponse)
        # After a quiet spell a frame goes at once.
        assert first_at - sent < interval / 2
        assert {frame.stream for frame in first.frames} == {1}
        # Four streams opened right after it, each in a request of its own: their first
        # frames wait for the interval and go in one response.
        for number in range(2, 6):
            await call.write(rs.RelayRequest(opens=[_generate(number, project.name, "Ep")]))
        second = await call.read()
        assert isinstance(second, rs.RelayResponse)
        # Stamped on arrival, so the first response's trip can shorten the gap a little.
        assert loop.time() - first_at >= interval * 0.5
        assert {2, 3, 4, 5} <= {frame.stream for frame in second.frames}
        call.cancel()


class RecordingContext:
    """A Relay call's context that records when each response was written."""

    def __init__(self) -> None:
        self.written: list[tuple[float, bytes]] = []

    async def write(self, response: bytes) -> None:
        self.written.append((asyncio.get_running_loop().time(), response))


async def test_a_response_the_budget_cut_short_is_followed_at_once_by_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interval = 0.5
    monkeypatch.setattr(_relay_cadence, "WRITE_INTERVAL_SECONDS", interval)
    monkeypatch.setattr(relay, "RESPONSE_BUDGET_BYTES", 1)  # every frame alone
    context = RecordingContext()
    call = relay._RelayCall(cast(Any, None), cast(Any, context))
    loop = asyncio.get_running_loop()
    for number in range(1, 6):
        call.push(bytes([number]))
    started = loop.time()
    writer = asyncio.create_task(call._write())
    try:
        await eventually(lambda: len(context.written) == 5, "the five frames")
        assert [body for _, body in context.written] == [bytes([n]) for n in range(1, 6)]
        assert context.written[-1][0] - started < interval / 2
        # Everything went: the next frame waits for the interval.
        call.push(b"\x06")
        await eventually(lambda: len(context.written) == 6, "the sixth frame")
        assert context.written[5][0] - context.written[4][0] >= interval * 0.8
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
