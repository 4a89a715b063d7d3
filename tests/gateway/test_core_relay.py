"""The gateway's SSE streams over Relay calls: same streams, fewer calls, clean failures."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, cast

import grpc
import grpc.aio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from scriptgen import _relay_cadence
from scriptgen.v1 import (
    generation_pb2,
    generation_service_pb2,
    relay_service_pb2,
    relay_service_pb2_grpc,
)

from gateway import core_relay, create_app
from gateway.config import add_arguments, from_arguments
from gateway.core_relay import CoreRelay, RelayedStream
from gateway.sse import EventRelay
from server import Core, SyntheticConfig
from tests.gateway.conftest import (
    CoreFactory,
    eventually,
    gateway_config,
    sample,
    serve_gateway,
)
from tests.gateway.frames import split_blocks
from tests.server.rpc import connect

SSE = {"Accept": "text/event-stream"}
rs = relay_service_pb2


def _relay_calls(core: Core, code: str) -> float:
    return sample(core, "scriptgen_grpc_requests_total", {"method": "Relay", "code": code})


def _relay_calls_ended(core: Core) -> float:
    """Relay calls the core ended, OK or CANCELLED: what these tests check is that a call
    ends, not the code the core gives a call cancelled while none of its streams is open
    (one CI run waited 5 s for CANCELLED in vain; why was not found)."""
    return _relay_calls(core, "OK") + _relay_calls(core, "CANCELLED")


async def _sse_generation(core_target: str, **overrides: Any) -> list[tuple[str, str]]:
    """(event name, data) of one SSE generation, through a gateway with `overrides`."""
    async with serve_gateway(core_target, **overrides) as http:
        project = (await http.post("/v1/projects", json={"title": "Night Shift"})).json()["name"]
        response = await http.post(
            f"/v1/{project}/generations", json={"title": "Pilot"}, headers=SSE
        )
        assert response.status_code == 200
    blocks = split_blocks(response.text)
    return [(b.value("event") or "", b.value("data") or "") for b in blocks if b.value("event")]


@pytest.mark.parametrize("calls", [0, 1, 4])
async def test_a_stream_is_the_same_over_relay_calls_and_over_a_call_each(
    start_core: CoreFactory, calls: int
) -> None:
    core = await start_core(SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0))
    target = f"127.0.0.1:{core.grpc_port}"
    events = await _sse_generation(target, core_relay_calls=calls)
    names = [name for name, _ in events]
    assert names[0] == "queued" and names[-1] == "completed"
    assert names.count("completed") == 1 and "delta" in names
    # The gateway's Relay call ended when it stopped; none with a call each.
    if calls:
        await eventually(lambda: _relay_calls_ended(core) == 1, "the call's end")
    assert _relay_calls_ended(core) == (1 if calls else 0)
    # A call is counted when the core's handler returns, which may come after its last event.
    generate = {"method": "GenerateScript", "code": "OK"}
    await eventually(
        lambda: sample(core, "scriptgen_grpc_requests_total", generate) >= 1, "the call counted"
    )
    assert sample(core, "scriptgen_grpc_requests_total", generate) == 1


async def test_a_burst_of_streams_shares_the_relay_calls(start_core: CoreFactory) -> None:
    core = await start_core(SyntheticConfig(first_token_seconds=0.0, tokens_per_second=200.0))
    target = f"127.0.0.1:{core.grpc_port}"
    async with serve_gateway(target, core_relay_calls=2) as http:
        project = (await http.post("/v1/projects", json={"title": "Night Shift"})).json()["name"]

        async def stream(n: int) -> str:
            response = await http.post(
                f"/v1/{project}/generations", json={"title": f"Ep {n}"}, headers=SSE
            )
            return response.text

        texts = await asyncio.gather(*(stream(n) for n in range(12)))
        assert all("event: completed" in text for text in texts)
    # Twelve streams, two calls (both ended when the gateway stopped).
    await eventually(lambda: _relay_calls_ended(core) == 2, "both calls' ends")
    generate = {"method": "GenerateScript", "code": "OK"}
    assert sample(core, "scriptgen_grpc_requests_total", generate) == 12


def _one_call_relay(channel: grpc.aio.Channel, max_age_seconds: float = 60) -> CoreRelay:
    return CoreRelay(
        relay_service_pb2_grpc.RelayServiceStub(channel), calls=1, max_age_seconds=max_age_seconds
    )


async def _collect(stream: RelayedStream) -> tuple[list[int], grpc.aio.AioRpcError | None]:
    """A relayed stream's event sequences and its end."""
    sequences: list[int] = []
    ended: asyncio.Future[grpc.aio.AioRpcError | None] = asyncio.get_running_loop().create_future()
    stream.attach(lambda event: sequences.append(event.sequence), ended.set_result)
    async with asyncio.timeout(20):
        error = await ended
    return sequences, error


async def test_an_old_relay_call_takes_no_new_streams_and_ends_after_its_last(
    start_core: CoreFactory,
) -> None:
    core = await start_core(SyntheticConfig(first_token_seconds=0.0, tokens_per_second=60.0))
    target = f"127.0.0.1:{core.grpc_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        async with connect(target) as rpc:
            project = await rpc.create_project()
        relay = _one_call_relay(channel, max_age_seconds=0.3)
        request = generation_service_pb2.GenerateScriptRequest(parent=project.name, title="A")
        first = relay.generate_script(request, ())
        first_events = asyncio.create_task(_collect(first))
        await asyncio.sleep(0.5)
        request.title = "B"
        second = relay.generate_script(request, ())
        assert first._call is not second._call, "an old call takes no new streams"
        sequences, error = await first_events
        assert error is None and sequences == list(range(1, len(sequences) + 1))
        # The old call finished writing after its last stream, and the core ended it OK.
        await eventually(lambda: _relay_calls(core, "OK") == 1, "the old call to end")
        sequences, error = await _collect(second)
        assert error is None and sequences[0] == 1
        await relay.close()
    # Without the close the new call would stay open: the core counts its end.
    await eventually(lambda: _relay_calls_ended(core) == 2, "the new call's end")


class FakeRelayCore:
    """A stand-in core with only RelayService, whose `relay` a test writes."""

    calls = 0

    def relay(
        self, requests: AsyncIterator[rs.RelayRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[rs.RelayResponse]:
        raise NotImplementedError

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve on a free loopback port; its target."""
        method = grpc.stream_stream_rpc_method_handler(
            self.relay,
            request_deserializer=rs.RelayRequest.FromString,
            response_serializer=rs.RelayResponse.SerializeToString,
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("scriptgen.v1.RelayService", {"Relay": method}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(None)


def _queued(stream: int) -> rs.RelayFrame:
    event = generation_pb2.GenerationEvent(generation="generations/g1", sequence=1)
    event.queued.parent = "projects/p1"
    return rs.RelayFrame(stream=stream, event=event)


class FailingRelay(FakeRelayCore):
    """A core whose Relay calls send one event per stream opened, then fail UNAVAILABLE."""

    async def relay(
        self, requests: AsyncIterator[rs.RelayRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[rs.RelayResponse]:
        self.calls += 1
        async for request in requests:
            for opened in request.opens:
                yield rs.RelayResponse(frames=[_queued(opened.stream)])
            await asyncio.sleep(0.05)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "core going away")


@pytest.fixture
async def failing_core() -> AsyncIterator[tuple[FailingRelay, str]]:
    relay = FailingRelay()
    async with relay.serve() as target:
        yield relay, target


async def test_a_failed_relay_call_ends_each_stream_with_its_error_and_the_next_opens_anew(
    failing_core: tuple[FailingRelay, str],
) -> None:
    fake, target = failing_core
    async with grpc.aio.insecure_channel(target) as channel:
        relay = _one_call_relay(channel)
        request = generation_service_pb2.StreamGenerationEventsRequest(name="generations/g1")
        results = await asyncio.gather(
            _collect(relay.stream_generation_events(request, ())),
            _collect(relay.stream_generation_events(request, ())),
        )
        for sequences, error in results:
            assert sequences == [1]
            assert error is not None and error.code() is grpc.StatusCode.UNAVAILABLE
        sequences, error = await _collect(relay.stream_generation_events(request, ()))
        assert sequences == [1] and error is not None
        await relay.close()
    assert fake.calls == 2


async def test_sse_after_a_failed_relay_call_is_a_failed_event_then_a_clean_end(
    failing_core: tuple[FailingRelay, str],
) -> None:
    _, target = failing_core
    app = create_app(gateway_config(target, core_relay_calls=1))
    async with TestClient(TestServer(app)) as client:
        response = await client.get(
            "/v1/generations/g1/events", headers={"Accept": "text/event-stream"}
        )
        assert response.status == 200
        blocks = split_blocks(await response.text())
    assert blocks[1].value("event") == "queued"
    assert blocks[-1].value("event") == "failed"
    assert '"code":14' in (blocks[-1].value("data") or "").replace(" ", "")
    assert blocks[-1].value("id") is None


def test_relay_settings_are_checked() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, {})

    def calls(*flags: str) -> int:
        return from_arguments(parser.parse_args(list(flags))).relay_calls()

    # auto: one call to one address (the default target), four to a name of several cores.
    assert from_arguments(parser.parse_args([])).core_relay_calls is None
    assert calls() == 1
    headless = "dns:///scriptgen-core-headless:50051"
    assert calls("--core-target", headless) == 4
    assert calls("--core-target", headless, "--core-relay-calls=AUTO") == 4
    assert calls("--core-target", "scriptgen-core:50051", "--core-load-balancing=pick_first") == 1
    # A number is taken as given, whatever the target.
    assert calls("--core-relay-calls", "0") == 0
    assert calls("--core-target", headless, "--core-relay-calls", "1") == 1
    environ = argparse.ArgumentParser()
    add_arguments(environ, {"SCRIPTGEN_CORE_RELAY_CALLS": "3"})
    assert from_arguments(environ.parse_args([])).relay_calls() == 3
    refused = r"--core-relay-calls \(SCRIPTGEN_CORE_RELAY_CALLS\) must be auto or 0\.\.64"
    for bad in ("65", "-1", "many"):
        with pytest.raises(ValueError, match=refused):
            calls("--core-relay-calls", bad)
    # Built in code, auto follows the target it is given (`scriptgen serve` sets its own).
    assert gateway_config("127.0.0.1:1").relay_calls() == 1
    assert gateway_config(headless).relay_calls() == 4
    assert replace(gateway_config(headless), core_target="127.0.0.1:1").relay_calls() == 1
    with pytest.raises(ValueError, match="--core-relay-max-age-seconds"):
        from_arguments(parser.parse_args(["--core-relay-max-age-seconds", "0"]))


async def test_a_stream_cancelled_before_its_open_went_out_never_reaches_the_core(
    start_core: CoreFactory,
) -> None:
    core = await start_core(SyntheticConfig(first_token_seconds=0.0, tokens_per_second=50.0))
    target = f"127.0.0.1:{core.grpc_port}"
    async with connect(target) as rpc:
        project = await rpc.create_project()
    async with grpc.aio.insecure_channel(target) as channel:
        relay = _one_call_relay(channel)
        request = generation_service_pb2.GenerateScriptRequest(parent=project.name, title="A")
        relay.generate_script(request, ()).cancel()  # in the same turn as its open
        request.title = "B"
        sequences, error = await _collect(relay.generate_script(request, ()))
        assert error is None and sequences[0] == 1
        await relay.close()
    generate = {"method": "GenerateScript", "code": "OK"}
    assert sample(core, "scriptgen_grpc_requests_total", generate) == 1
    cancelled = {"method": "GenerateScript", "code": "CANCELLED"}
    assert sample(core, "scriptgen_grpc_requests_total", cancelled) == 0


async def test_a_relayed_event_that_waits_is_copied_out_of_its_response() -> None:
    response = rs.RelayResponse()
    frame = response.frames.add(stream=1)
    frame.event.generation, frame.event.sequence = "generations/g1", 1
    frame.event.queued.parent = "projects/p1"
    stream = RelayedStream(cast(Any, None), 1)
    relay = EventRelay(stream)
    # Nobody waits yet: the event is kept as a copy of its own.
    stream._event(frame.event)
    kept = relay.ready()
    assert isinstance(kept, generation_pb2.GenerationEvent)
    assert kept == frame.event and kept is not frame.event
    del response
    assert kept.queued.parent == "projects/p1"
    # The writer waiting: it takes the event at once, as it is.
    waiting = asyncio.ensure_future(relay.next(5.0))
    await asyncio.sleep(0)
    stream._event(frame.event)
    assert await waiting is frame.event


class StoppingThenServing(FakeRelayCore):
    """A first Relay call whose core is stopping (every open refused), then a core that serves."""

    def __init__(self) -> None:
        self.opens: list[tuple[int, int]] = []  # (call, stream)
        self.refuse_all = False

    async def relay(
        self, requests: AsyncIterator[rs.RelayRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[rs.RelayResponse]:
        self.calls += 1
        call = self.calls
        async for request in requests:
            for opened in request.opens:
                self.opens.append((call, opened.stream))
                if call == 1 or self.refuse_all:
                    end = rs.RelayEnd(code=grpc.StatusCode.UNAVAILABLE.value[0], message="stopping")
                    yield rs.RelayResponse(frames=[rs.RelayFrame(stream=opened.stream, end=end)])
                    continue
                yield rs.RelayResponse(
                    frames=[
                        _queued(opened.stream),
                        rs.RelayFrame(stream=opened.stream, end=rs.RelayEnd()),
                    ]
                )


async def test_a_stream_a_stopping_core_refused_is_opened_once_more_on_another_call() -> None:
    fake = StoppingThenServing()
    async with fake.serve() as target, grpc.aio.insecure_channel(target) as channel:
        relay = _one_call_relay(channel)
        request = generation_service_pb2.StreamGenerationEventsRequest(name="generations/g1")
        sequences, error = await _collect(relay.stream_generation_events(request, ()))
        assert error is None and sequences == [1]
        # A stream that has had its retry ends with the refusal.
        fake.refuse_all = True
        sequences, error = await _collect(relay.stream_generation_events(request, ()))
        assert sequences == []
        assert error is not None and error.code() is grpc.StatusCode.UNAVAILABLE
        await relay.close()
    # Refused on call 1, served on call 2; then refused on 2 and, once more, on 3.
    assert fake.opens == [(1, 1), (2, 1), (2, 2), (3, 1)]


class ServingRecorder(FakeRelayCore):
    """A core that records when each RelayRequest came and what it opened, and serves each
    opened stream one event and its end."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, list[int]]] = []

    async def relay(
        self, requests: AsyncIterator[rs.RelayRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[rs.RelayResponse]:
        loop = asyncio.get_running_loop()
        async for request in requests:
            self.requests.append((loop.time(), [opened.stream for opened in request.opens]))
            for opened in request.opens:
                yield rs.RelayResponse(
                    frames=[
                        _queued(opened.stream),
                        rs.RelayFrame(stream=opened.stream, end=rs.RelayEnd()),
                    ]
                )


async def test_opens_soon_after_a_request_wait_for_the_interval_and_go_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interval = 0.5
    monkeypatch.setattr(_relay_cadence, "WRITE_INTERVAL_SECONDS", interval)
    fake = ServingRecorder()
    loop = asyncio.get_running_loop()
    async with fake.serve() as target, grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()  # the connection's setup is not the open's wait
        relay = _one_call_relay(channel)
        request = generation_service_pb2.StreamGenerationEventsRequest(name="generations/g1")
        opened_at = loop.time()
        first = relay.stream_generation_events(request, ())
        await eventually(lambda: len(fake.requests) == 1, "the first open")
        # After a quiet spell an open goes at once.
        assert fake.requests[0][0] - opened_at < interval / 2
        # Five more, one per turn of the loop, within the interval: one request.
        later = []
        for _ in range(5):
            later.append(relay.stream_generation_events(request, ()))
            await asyncio.sleep(0)
        results = await asyncio.gather(*(_collect(s) for s in [first, *later]))
        assert all(sequences == [1] and error is None for sequences, error in results)
        await relay.close()
    assert [streams for _, streams in fake.requests] == [[1], [2, 3, 4, 5, 6]]
    # Stamped on arrival, so the first request's trip can shorten the gap a little.
    assert fake.requests[1][0] - fake.requests[0][0] >= interval * 0.5


class RecordingCall:
    """A Relay call that records when each request was written and never answers."""

    def __init__(self) -> None:
        self.written: list[tuple[float, list[int]]] = []
        self._answer: asyncio.Future[rs.RelayResponse] = asyncio.get_running_loop().create_future()

    async def write(self, request: rs.RelayRequest) -> None:
        loop = asyncio.get_running_loop()
        self.written.append((loop.time(), [opened.stream for opened in request.opens]))

    async def read(self) -> rs.RelayResponse:
        return await self._answer

    def cancel(self) -> None:
        self._answer.cancel()


async def test_a_request_the_budget_cut_short_is_followed_at_once_by_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interval = 0.5
    monkeypatch.setattr(_relay_cadence, "WRITE_INTERVAL_SECONDS", interval)
    monkeypatch.setattr(core_relay, "REQUEST_BUDGET_BYTES", 1)  # every open alone
    fake = RecordingCall()
    stub = cast(Any, type("Stub", (), {"Relay": lambda self: fake})())
    call = core_relay._RelayCall(stub, lambda stream: False)
    request = generation_service_pb2.StreamGenerationEventsRequest(name="generations/g1")
    started = asyncio.get_running_loop().time()
    for _ in range(5):
        call.open((), stream_generation_events=request)
    try:
        await eventually(lambda: len(fake.written) == 5, "the five opens")
        assert [streams for _, streams in fake.written] == [[1], [2], [3], [4], [5]]
        assert fake.written[-1][0] - started < interval / 2
    finally:
        call.cancel()
        await call.wait_closed()
