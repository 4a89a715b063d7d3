"""The SSE relay on its own: a stream that breaks after the first byte, metadata sent upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import grpc.aio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from scriptgen.v1 import (
    generation_pb2,
    generation_service_pb2,
    project_service_pb2,
)

from gateway import create_app
from gateway.sse import EventRelay, relay_events
from gateway.sse import _Signal as Signal
from tests.gateway.conftest import gateway_config
from tests.gateway.frames import split_blocks


class BreakingCall:
    """A server stream that delivers one event, then fails as a lost core would."""

    def __init__(self) -> None:
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[generation_service_pb2.StreamGenerationEventsResponse]:
        return self._responses()

    async def _responses(
        self,
    ) -> AsyncIterator[generation_service_pb2.StreamGenerationEventsResponse]:
        event = generation_pb2.GenerationEvent(generation="generations/g1", sequence=1)
        event.queued.parent = "projects/p1"
        yield generation_service_pb2.StreamGenerationEventsResponse(event=event)
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "core lost"
        )

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()


async def test_an_error_after_the_first_byte_is_a_failed_event_then_a_clean_end() -> None:
    call = BreakingCall()

    async def handler(request: web.Request) -> web.StreamResponse:
        upstream = cast("grpc.aio.UnaryStreamCall[Any, Any]", call)
        return await relay_events(request, upstream, generation="generations/g1", route="test")

    # No core needed: the relay is fed directly.
    app = create_app(gateway_config("127.0.0.1:1"))
    app.router.add_get("/relay", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/relay")
        assert response.status == 200
        blocks = split_blocks(await response.text())
    assert blocks[0].lines == ["retry: 1500"]
    assert blocks[1].value("id") == "1"
    assert blocks[1].value("event") == "queued"
    assert blocks[2].value("id") is None, "a stream failure is not one of the job's events"
    assert blocks[2].value("event") == "failed"
    status = json.loads(blocks[2].value("data") or "")["failed"]["status"]
    assert status["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    # A transport error, not one of the core's: a generic message (gateway/errors.py).
    assert status["message"] == "The service is unavailable; retry later."
    assert "core lost" not in (blocks[2].value("data") or "")
    assert len(blocks) == 3
    assert call.cancelled


class RecordingProjects:
    """A stand-in ListProjects that records the metadata each call carries."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def list_projects(
        self,
        request: project_service_pb2.ListProjectsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> project_service_pb2.ListProjectsResponse:
        pairs = context.invocation_metadata() or ()
        self.metadata.append({key: str(value) for key, value in pairs})
        return project_service_pb2.ListProjectsResponse()

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self.list_projects,
            request_deserializer=project_service_pb2.ListProjectsRequest.FromString,
            response_serializer=project_service_pb2.ListProjectsResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(
            "scriptgen.v1.ProjectService", {"ListProjects": method}
        )


async def test_request_id_and_provider_hints_travel_as_grpc_metadata() -> None:
    servicer = RecordingProjects()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((servicer.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        app = create_app(gateway_config(f"127.0.0.1:{port}"))
        async with TestClient(TestServer(app)) as client:
            given = await client.get(
                "/v1/projects",
                headers={"X-Request-Id": "req-42", "x-preferred-provider": "anthropic"},
            )
            assert given.status == 200
            generated = await client.get("/v1/projects")
    finally:
        await server.stop(None)
    assert servicer.metadata[0]["x-request-id"] == "req-42"
    assert servicer.metadata[0]["x-preferred-provider"] == "anthropic"
    assert servicer.metadata[1]["x-request-id"] == generated.headers["X-Request-Id"]
    assert "x-preferred-provider" not in servicer.metadata[1]


class QueuedCall:
    """A server stream that yields what the test puts in, and ends on None."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[generation_service_pb2.GenerateScriptResponse | None] = (
            asyncio.Queue()
        )

    def __aiter__(self) -> AsyncIterator[generation_service_pb2.GenerateScriptResponse]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[generation_service_pb2.GenerateScriptResponse]:
        while (response := await self.responses.get()) is not None:
            yield response

    def cancel(self) -> bool:
        return True


def _response(sequence: int) -> generation_service_pb2.GenerateScriptResponse:
    event = generation_pb2.GenerationEvent(generation="generations/g1", sequence=sequence)
    event.progress.message = "step"
    return generation_service_pb2.GenerateScriptResponse(event=event)


async def test_each_wait_of_the_relay_ends_at_its_own_bound() -> None:
    call = QueuedCall()
    relay = EventRelay(cast("grpc.aio.UnaryStreamCall[Any, Any]", call))
    loop = asyncio.get_running_loop()
    try:
        # A long first wait that an event ends early leaves its timer behind; a shorter
        # wait after it still ends at its own bound, not at the first one's.
        call.responses.put_nowait(_response(1))
        first = await relay.next(30.0)
        assert isinstance(first, generation_pb2.GenerationEvent) and first.sequence == 1
        started = loop.time()
        assert await relay.next(0.2) is Signal.IDLE
        assert 0.15 <= loop.time() - started < 2.0
        # A longer wait that begins while a shorter one's timer is still set (an event
        # ended that wait early) is not ended by that timer.
        loop.call_later(0.05, call.responses.put_nowait, _response(2))
        item = await relay.next(0.3)
        assert isinstance(item, generation_pb2.GenerationEvent) and item.sequence == 2
        started = loop.time()
        assert await relay.next(0.6) is Signal.IDLE
        assert loop.time() - started >= 0.55
        # Events end waits at once, wait after wait.
        for sequence in range(3, 7):
            loop.call_later(0.01, call.responses.put_nowait, _response(sequence))
            item = await relay.next(30.0)
            assert isinstance(item, generation_pb2.GenerationEvent)
            assert item.sequence == sequence
        call.responses.put_nowait(None)
        assert await relay.next(30.0) is Signal.END
    finally:
        await relay.close()
