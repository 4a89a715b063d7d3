"""Event streams over time: idle pings, core heartbeats, client disconnects, gateway stop."""

from __future__ import annotations

import asyncio
import time

import httpx
from httpx_sse import aconnect_sse

from gateway import GatewayServer
from server import Core, SyntheticConfig
from tests.gateway.conftest import (
    CoreFactory,
    eventually,
    gateway_config,
    sample,
    serve_gateway,
)
from tests.gateway.frames import Block, split_blocks

SSE = {"Accept": "text/event-stream"}


async def _project(http: httpx.AsyncClient) -> str:
    response = await http.post("/v1/projects", json={"title": "Night Shift"})
    name: str = response.json()["name"]
    return name


def _is_ping(block: Block) -> bool:
    return block.lines == [": ping"]


def _is_heartbeat(block: Block) -> bool:
    return (
        len(block.lines) == 2 and block.lines[0].startswith("id: ") and block.lines[1] == ": ping"
    )


async def test_idle_streams_get_pings_and_heartbeats_keep_ids(start_core: CoreFactory) -> None:
    # A writer that thinks for 2.5 s before its first token: the core appends a
    # heartbeat after 1 s of silence, the gateway pings every 0.3 s.
    core = await start_core(SyntheticConfig(first_token_seconds=2.5, tokens_per_second=0.0))
    target = f"127.0.0.1:{core.grpc_port}"
    async with serve_gateway(target, ping_interval_seconds=0.3) as http:
        project = await _project(http)
        raw = ""
        async with http.stream(
            "POST", f"/v1/{project}/generations", json={"title": "Pilot"}, headers=SSE
        ) as response:
            async for chunk in response.aiter_text():
                raw += chunk
                complete = split_blocks(raw[: raw.rfind("\n\n") + 2]) if "\n\n" in raw else []
                if any(_is_ping(block) for block in complete) and any(
                    _is_heartbeat(block) for block in complete
                ):
                    break
    blocks = split_blocks(raw[: raw.rfind("\n\n") + 2])
    assert blocks[0].lines == ["retry: 1500"]
    assert any(_is_ping(block) for block in blocks), raw
    assert any(_is_heartbeat(block) for block in blocks), raw
    ids = [int(block.value("id") or 0) for block in blocks if block.value("id")]
    assert ids == list(range(1, len(ids) + 1)), "heartbeats take their place in the sequence"


async def test_client_disconnect_cancels_the_upstream_call(start_core: CoreFactory) -> None:
    core = await start_core(SyntheticConfig(first_token_seconds=0.0, tokens_per_second=20.0))
    server = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}"))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            project = await _project(http)
            cancelled_before = sample(
                core,
                "scriptgen_grpc_requests_total",
                {"method": "GenerateScript", "code": "CANCELLED"},
            )
            async with aconnect_sse(
                http, "POST", f"/v1/{project}/generations", json={"title": "Pilot"}, headers=SSE
            ) as source:
                deltas = 0
                async for event in source.aiter_sse():
                    deltas += event.event == "delta"
                    if deltas == 3:
                        break
                assert sample(core, "scriptgen_streams_active") == 1
            # Leaving the block closed the connection mid-stream.
        await eventually(
            lambda: sample(core, "scriptgen_streams_active") == 0, "the core stream to end"
        )
        await eventually(
            lambda: (
                sample(
                    core,
                    "scriptgen_grpc_requests_total",
                    {"method": "GenerateScript", "code": "CANCELLED"},
                )
                == cancelled_before + 1
            ),
            "the core to count a cancelled GenerateScript",
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            metrics = (await http.get("/metrics")).text
        assert "scriptgen_gateway_active_streams 0.0" in metrics
    finally:
        await server.stop()


async def test_stopping_the_gateway_ends_open_streams_cleanly(start_core: CoreFactory) -> None:
    core: Core = await start_core(SyntheticConfig(first_token_seconds=0.0, tokens_per_second=10.0))
    server = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}", drain_seconds=5.0))
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        project = await _project(http)
        started = (
            await http.post(f"/v1/{project}/generations", json={"title": "Pilot", "detach": True})
        ).json()
        async with http.stream("GET", started["eventsUrl"]) as response:
            stream = response.aiter_text()
            first = await anext(stream)
            assert first.startswith("retry: ")
            began = time.monotonic()
            stopping = asyncio.create_task(server.stop())
            rest = "".join([chunk async for chunk in stream])
            await stopping
    assert time.monotonic() - began < 3.0, "drain must not wait for the job to finish"
    assert (first + rest).endswith("\n\n")
    assert "event: completed" not in rest
