"""The pipeline against the LLM stand-in: what the model is sent, and what review refuses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from scriptgen.v1 import generation_pb2
from scriptgen.v1 import project_service_pb2 as ps

from server import Core
from server.config import RouterConfig, build_providers
from tests.conftest import fast_core_config
from tests.gateway.conftest import eventually
from tests.server.knowledge_fake import FakeKnowledge, FakePassage
from tests.server.rpc import connect, script_of
from tests.standins.llm_standin import LlmStandin, Reply

OUTLINE = "1. Maya finds the diary.\n2. The stranger returns.\n"
SCRIPT = (
    "INT. LIGHTHOUSE - NIGHT\n\nWaves hit the rocks.\n\nMAYA\nWho wrote this?\n\n"
    "THEO\nSomeone who knew you.\n\n> FADE OUT.\n"
)
#: Lost its format: no scene heading, and cues that never get their dialogue.
BROKEN = "MAYA\n\nTHEO\n\nGRACE\n\nJONAH\n\nELENA\n\nSomebody should say something.\n"
DIARY = FakePassage(
    source="projects/p/knowledge/diary",
    title="The diary",
    kind="KNOWLEDGE_KIND_PLOT_OUTLINE",
    text="The diary belongs to Maya's missing sister, Ines.",
    score=0.8,
)


@pytest.fixture(params=[0, 1], ids=["in-core", "provider-worker"])
async def llm_core(
    request: pytest.FixtureRequest, tmp_path: Path, standin: LlmStandin
) -> AsyncIterator[Core]:
    """A core writing through the stand-in: its calls made in the core, or in a provider
    worker process (`--provider-workers 1`)."""
    providers = build_providers(
        chain="openai",
        openai_api_key="test",
        openai_base_url=f"{standin.url}/v1",
        openai_model="gpt-test",
        router=RouterConfig(max_attempts=1, first_token_timeout_seconds=2.0),
    )
    running = Core(
        replace(
            fast_core_config(tmp_path / "core"),
            providers=providers,
            provider_workers=request.param,
        )
    )
    running.runner.knowledge = FakeKnowledge(passages=[DIARY])
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.0)


def _messages(body: dict[str, object]) -> str:
    messages = body["messages"]
    assert isinstance(messages, list)
    return "\n".join(str(message["content"]) for message in messages)


async def test_retrieved_knowledge_and_the_outline_reach_the_model(
    llm_core: Core, standin: LlmStandin
) -> None:
    standin.openai = [Reply(text=OUTLINE), Reply(text=SCRIPT)]
    async with connect(f"127.0.0.1:{llm_core.grpc_port}") as rpc:
        project = await rpc.create_project(logline="A keeper finds a diary.")
        events = await rpc.generate(project.name, "The Diary")
    completed = events[-1].completed
    assert completed.episode.script == SCRIPT == script_of(events)
    plan_request, write_request = standin.requests
    assert DIARY.text in _messages(plan_request.body)
    assert "A keeper finds a diary." in _messages(plan_request.body)
    assert OUTLINE.strip() in _messages(write_request.body)
    # The snapshot holds exactly what the model was sent.
    plan, write = completed.episode.prompt_snapshot.prompts
    assert [m["content"] for m in plan_request.body["messages"]] == [plan.system, plan.user]
    assert [m["content"] for m in write_request.body["messages"]] == [write.system, write.user]
    assert completed.usage[0].provider == "openai"


async def test_review_rejects_broken_fountain_and_nothing_is_saved(
    llm_core: Core, standin: LlmStandin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="server.jobs.runner")
    standin.openai = [Reply(text=OUTLINE), Reply(text=BROKEN)]
    async with connect(f"127.0.0.1:{llm_core.grpc_port}") as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name, "Broken")
        episodes = await rpc.projects.ListEpisodes(ps.ListEpisodesRequest(parent=project.name))
    assert script_of(events) == BROKEN  # the stream showed what was written
    assert events[-1].HasField("failed")
    status = events[-1].failed.status
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "no scene heading" in status.message and "5 of 5 character cues" in status.message
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "SCRIPT_REJECTED"
    stages = [e.stage_started.stage for e in events if e.HasField("stage_started")]
    assert stages[-1] == generation_pb2.STAGE_REVIEW
    assert list(episodes.episodes) == []
    review = [e.progress.message for e in events if e.HasField("progress")][-1]
    assert review.startswith("rejected: 0 scenes")
    # The job's last log line names why it failed (written just after its terminal event).
    name = events[-1].generation
    await eventually(
        lambda: any(r.getMessage().startswith(f"{name}: failed") for r in caplog.records),
        "the job's last log line",
    )
    job_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(name)]
    assert job_lines == [f"{name}: started for {project.name}", f"{name}: failed (SCRIPT_REJECTED)"]
