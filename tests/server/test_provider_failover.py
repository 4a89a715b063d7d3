"""A real core with the stand-in as OpenAI and Anthropic: failover, per-request control, health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2
from scriptgen.v1 import generation_service_pb2 as gs
from scriptgen.v1 import project_service_pb2 as ps

from server import Core
from server.config import RouterConfig, build_providers
from server.health import GENERATION_SERVICE
from tests.conftest import fast_core_config
from tests.server.rpc import connect, field_violations, health_check, script_of
from tests.standins.llm_standin import LlmStandin, Reply

OUTLINE = "1. Cold open.\n2. The turn.\n3. The button.\n"
SCRIPT = (
    "INT. DINER - NIGHT\n\nGRACE stirs her coffee. Rain on the glass.\n\n"
    "GRACE\nYou came back.\n\nTHEO\nI never left.\n\nCUT TO:\n\n"
    "EXT. ROOFTOP - DAWN\n\nThey watch the city wake.\n\n> FADE OUT.\n"
)
CUT = 48  # a multiple of the stand-in's 6-character chunks


@pytest.fixture
async def llm_core(tmp_path: Path, standin: LlmStandin) -> AsyncIterator[Core]:
    providers = build_providers(
        chain="openai,anthropic",
        openai_api_key="test",
        openai_base_url=f"{standin.url}/v1",
        openai_model="gpt-test",
        anthropic_api_key="test",
        anthropic_base_url=standin.url,
        anthropic_model="claude-test",
        router=RouterConfig(
            max_attempts=1,
            breaker_failures=2,
            breaker_cooldown_seconds=0.5,
            first_token_timeout_seconds=2.0,
            idle_timeout_seconds=2.0,
        ),
    )
    running = Core(replace(fast_core_config(tmp_path / "core"), providers=providers))
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.0)


def _continue_restarting_the_line(body: dict[str, Any]) -> str:
    partial = next(m for m in reversed(body["messages"]) if m["role"] == "assistant")
    return SCRIPT[str(partial["content"]).rfind("\n") + 1 :]  # restarts the line it was cut in


async def test_a_job_fails_over_mid_stream_without_repeating_text(
    llm_core: Core, standin: LlmStandin
) -> None:
    standin.openai = [
        Reply(text=OUTLINE, input_tokens=40, output_tokens=9),
        Reply(text=SCRIPT, cut_after=CUT),
    ]
    standin.anthropic = [
        Reply(text=_continue_restarting_the_line, input_tokens=70, output_tokens=25)
    ]
    # Asked with a user turn to continue (Claude 4.6 and later take no prefill, which would
    # write on exactly), the model restarts the line: the overlap is trimmed.
    standin.refuses_prefill = True
    async with connect(f"127.0.0.1:{llm_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name)
        saved = await rpc.projects.GetEpisode(
            ps.GetEpisodeRequest(name=events[-1].completed.episode.name)
        )
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[0].queued.providers == ["openai", "anthropic"]
    assert events[0].queued.notice == ""
    completed = events[-1].completed
    assert script_of(events) == completed.episode.script == saved.episode.script == SCRIPT
    switched = [e.provider_switched for e in events if e.HasField("provider_switched")]
    assert len(switched) == 1
    assert (switched[0].from_provider, switched[0].to_provider) == ("openai", "anthropic")
    assert switched[0].offset == CUT
    offsets = [e.text_delta.offset for e in events if e.HasField("text_delta")]
    texts = [e.text_delta.text for e in events if e.HasField("text_delta")]
    assert offsets == [sum(len(t) for t in texts[:i]) for i in range(len(texts))]
    usage = {u.provider: u for u in completed.usage}
    assert set(usage) == {"openai", "anthropic"}
    assert usage["openai"].input_tokens >= 40 and usage["openai"].output_tokens >= 9
    assert (usage["anthropic"].input_tokens, usage["anthropic"].output_tokens) == (70, 25)
    assert usage["anthropic"].model == "claude-test"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("x-preferred-provider", "gemini"),
        ("x-preferred-provider", "local"),
        ("x-disabled-providers", "openai,nope"),
        ("x-feature-flags", "turbo"),
        ("x-disabled-providers", "openai,anthropic"),
    ],
)
async def test_bad_routing_metadata_is_invalid_argument(
    llm_core: Core, key: str, value: str
) -> None:
    async with connect(f"127.0.0.1:{llm_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Pilot"), metadata=((key, value),)
        )
        with pytest.raises(aio.AioRpcError) as raised:
            await call.read()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert key in field_violations(raised.value)


async def test_preferred_and_disabled_providers_narrow_the_chain(
    llm_core: Core, standin: LlmStandin
) -> None:
    standin.anthropic = [Reply(text=SCRIPT)]
    async with connect(f"127.0.0.1:{llm_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        request = gs.GenerateScriptRequest(parent=project.name, title="Pilot")
        preferred = [
            r.event
            async for r in rpc.generations.GenerateScript(
                request, metadata=(("x-preferred-provider", "anthropic"),)
            )
        ]
        only = [
            r.event
            async for r in rpc.generations.GenerateScript(
                request,
                metadata=(("x-disabled-providers", "openai"), ("x-feature-flags", "polish")),
            )
        ]
    assert preferred[0].queued.providers == ["anthropic", "openai"]
    assert only[0].queued.providers == ["anthropic"]
    assert preferred[-1].HasField("completed") and only[-1].HasField("completed")
    assert standin.of("openai") == []


async def test_generation_service_is_not_serving_while_every_breaker_is_open(
    llm_core: Core, standin: LlmStandin
) -> None:
    standin.openai = [Reply(status=500)]
    standin.anthropic = [Reply(status=500)]
    async with connect(f"127.0.0.1:{llm_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        for _ in range(2):
            events = await rpc.generate(project.name)
            assert events[-1].HasField("failed")
        check = health_check(rpc.channel)
        request = health_pb2.HealthCheckRequest(service=GENERATION_SERVICE)
        assert (await check(request)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        overall = await check(health_pb2.HealthCheckRequest(service=""))
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.generate(project.name)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.sleep(0.7)  # the cool-down ends: breakers half-open
        assert (await check(request)).status == health_pb2.HealthCheckResponse.SERVING
    states = llm_core.metrics.registry.get_sample_value(
        "scriptgen_provider_breaker_state", {"provider": "openai"}
    )
    assert states == 1.0


async def test_cancelling_a_job_closes_the_providers_http_stream(
    llm_core: Core, standin: LlmStandin
) -> None:
    standin.openai = [Reply(text=OUTLINE), Reply(text=SCRIPT * 50, chunk_delay=0.05)]
    async with connect(f"127.0.0.1:{llm_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Pilot")
        )
        async for response in call:
            if response.event.HasField("text_delta"):
                break
        name = response.event.generation
        await rpc.generations.CancelGeneration(gs.CancelGenerationRequest(name=name))
        writing = standin.of("openai")[1]
        await asyncio.wait_for(writing.ended.wait(), 2)
        events = await rpc.follow(name)
    assert writing.client_closed and not writing.finished
    assert events[-1].HasField("cancelled")


async def test_a_job_every_provider_refuses_fails_for_good(
    llm_core: Core, standin: LlmStandin
) -> None:
    standin.openai = [Reply(text="", finish="content_filter")]
    standin.anthropic = [Reply(text="", finish="refusal")]
    async with connect(f"127.0.0.1:{llm_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name)
    assert events[-1].HasField("failed")
    status = events[-1].failed.status
    # Not UNAVAILABLE: a client would retry, and pay for the same refusals again.
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "CONTENT_REFUSED"
    assert [r.api for r in standin.requests] == ["openai", "anthropic"]
