"""Over its stream limit a core refuses with RESOURCE_EXHAUSTED, a gateway with 429."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from scriptgen.v1 import generation_service_pb2

from gateway import GatewayServer
from server import Core, SyntheticConfig
from server.admission import StreamAdmission
from server.errors import ResourceExhausted
from tests.conftest import fast_core_config
from tests.gateway.conftest import eventually, gateway_config
from tests.server.rpc import connect


def test_admission_counts_against_the_limit() -> None:
    admission = StreamAdmission(2)
    admission.check()
    admission.open = 2
    with pytest.raises(ResourceExhausted) as refused:
        admission.check()
    assert refused.value.reason == "OVER_CAPACITY" and refused.value.retry_after_seconds > 0
    admission.open = 1
    admission.check()
    StreamAdmission(0).check()  # 0: no limit


def _status(error: aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status")


async def _slow_core(tmp_path: Path, max_streams: int = 0) -> Core:
    config = replace(
        fast_core_config(tmp_path / "core"),
        metrics_address=None,
        synthetic=SyntheticConfig(first_token_seconds=30.0, tokens_per_second=1.0),
        max_streams=max_streams,
    )
    core = Core(config)
    await core.start()
    return core


async def test_core_refuses_a_stream_over_its_limit(tmp_path: Path) -> None:
    core = await _slow_core(tmp_path, max_streams=1)
    try:
        async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
            project = await rpc.create_project()
            request = generation_service_pb2.GenerateScriptRequest(parent=project.name, title="A")
            first = rpc.generations.GenerateScript(request)
            opening = await first.read()
            assert isinstance(opening, generation_service_pb2.GenerateScriptResponse)
            assert opening.event.HasField("queued")
            refused = rpc.generations.GenerateScript(
                generation_service_pb2.GenerateScriptRequest(parent=project.name, title="B")
            )
            with pytest.raises(aio.AioRpcError) as caught:
                await refused.read()
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = _status(caught.value).details
            info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
            assert any(d.Unpack(info) for d in details) and info.reason == "OVER_CAPACITY"
            assert any(d.Unpack(retry) for d in details) and retry.retry_delay.seconds >= 1
            assert core.runner.running == 1  # the refused stream started no job
            first.cancel()
    finally:
        await core.stop(grace=0)


SSE = {"Accept": "text/event-stream"}


@asynccontextmanager
async def _limited_gateway(tmp_path: Path, max_streams: int) -> AsyncIterator[tuple[Core, str]]:
    """A slow core behind a gateway of `max_streams`; the core and a project's generations URL."""
    core = await _slow_core(tmp_path)
    gateway = GatewayServer(
        gateway_config(
            f"127.0.0.1:{core.grpc_port}", max_streams=max_streams, first_event_wait_seconds=1.0
        )
    )
    await gateway.start()
    try:
        async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
            project = await rpc.create_project()
        yield core, f"http://127.0.0.1:{gateway.port}/v1/{project.name}/generations"
    finally:
        await gateway.stop()
        await core.stop(grace=0)


async def test_gateway_answers_429_with_retry_after_over_its_limit(tmp_path: Path) -> None:
    async with (
        _limited_gateway(tmp_path, max_streams=1) as (core, url),
        httpx.AsyncClient(timeout=10) as http,
    ):
        async with http.stream("POST", url, json={"title": "A"}, headers=SSE) as open_:
            assert open_.status_code == 200
            refused = await http.post(url, json={"title": "B"}, headers=SSE)
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "1"
            error = refused.json()["error"]
            assert error["status"] == "RESOURCE_EXHAUSTED"
            assert any(d.get("reason") == "OVER_CAPACITY" for d in error["details"])
        assert core.runner.running == 1


async def test_a_simultaneous_burst_at_the_gateway_admits_only_its_limit(tmp_path: Path) -> None:
    async with (
        _limited_gateway(tmp_path, max_streams=3) as (core, url),
        httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=20)) as http,
    ):
        requests = [
            http.build_request("POST", url, json={"title": f"T{n}"}, headers=SSE) for n in range(12)
        ]
        # Twelve at once on twelve connections: the slot is taken before the handler's first
        # await on the core, so the limit holds however their steps interleave.
        responses = await asyncio.gather(*(http.send(r, stream=True) for r in requests))
        try:
            codes = sorted(response.status_code for response in responses)
            assert codes == [200] * 3 + [429] * 9
            # The refused streams started no job (a 200 may come before its job's start).
            await eventually(lambda: core.runner.running == 3, "three jobs running")
            await asyncio.sleep(0.2)
            assert core.runner.running == 3
        finally:
            for response in responses:
                await response.aclose()
