"""The pipeline with the synthetic writer: context in, stages announced, the writing recorded."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import generation_pb2, project_pb2
from scriptgen.v1 import generation_service_pb2 as gs
from scriptgen.v1 import project_service_pb2 as ps

from server import Core
from tests.server.knowledge_fake import FakeKnowledge, FakePassage
from tests.server.rpc import connect, error_info, script_of

BIBLE = FakePassage(
    source="projects/p/knowledge/bible",
    title="Story bible",
    kind="KNOWLEDGE_KIND_STORY_BIBLE",
    text="Maya is a night nurse who never sleeps; the diner closed in 1999.",
    score=0.9,
)


@pytest.fixture
def knowledge(core: Core) -> FakeKnowledge:
    fake = FakeKnowledge(passages=[BIBLE])
    core.runner.knowledge = fake
    return fake


def _progress(events: list[generation_pb2.GenerationEvent], stage: int) -> list[str]:
    return [
        e.progress.message for e in events if e.HasField("progress") and e.progress.stage == stage
    ]


async def test_knowledge_reaches_the_plan_prompt_and_the_episode_is_indexed(
    core_target: str, knowledge: FakeKnowledge
) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name, "Pilot", description="the diner reopens")
    stages = [e.stage_started.stage for e in events if e.HasField("stage_started")]
    assert stages[-1] == generation_pb2.STAGE_INDEX
    completed = events[-1].completed
    plan, write = completed.episode.prompt_snapshot.prompts
    assert (plan.stage, write.stage) == ("plan", "write")
    assert BIBLE.text in plan.user and "[KNOWLEDGE_KIND_STORY_BIBLE] Story bible" in plan.user
    project_id = project.name.removeprefix("projects/")
    assert knowledge.queries == [(project_id, "Pilot\nthe diner reopens", 1500)]
    assert [(pid, e.name) for pid, e in knowledge.indexed] == [(project_id, completed.episode.name)]
    assert knowledge.indexed[0][1].script == script_of(events)
    assert (
        _progress(events, generation_pb2.STAGE_PLAN)[0]
        == "1 knowledge passages, 0 earlier episodes"
    )
    assert _progress(events, generation_pb2.STAGE_INDEX) == [f"indexed {completed.episode.name}"]


async def test_episode_two_plans_with_episode_one(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        first = (await rpc.generate(project.name, "Pilot"))[-1].completed.episode
        second = (await rpc.generate(project.name, "The Morning After"))[-1].completed.episode
    assert second.number == 2
    plan = second.prompt_snapshot.prompts[0]
    assert f'Episode 1 "Pilot":\n{first.outline.strip()}' in plan.user
    assert "Plan episode 2" in plan.user
    assert 'Episode 1 "Pilot"' not in first.prompt_snapshot.prompts[0].user


async def test_the_episode_records_how_it_was_written(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project(
            "밤 근무",
            language="ko",
            type=project_pb2.PROJECT_TYPE_THRILLER,
            audience="20-30대",
            tone="건조한 누아르",
        )
        events = await rpc.generate(project.name, "첫 번째 밤")
        completed = events[-1].completed
        stored = (
            await rpc.projects.GetEpisode(ps.GetEpisodeRequest(name=completed.episode.name))
        ).episode
    assert stored == completed.episode
    assert stored.script == script_of(events)
    snapshot = stored.prompt_snapshot
    assert snapshot.template_version == "v2"
    plan, write = snapshot.prompts
    assert "v2/languages/ko.txt" in write.templates and "v2/types/thriller.txt" in write.templates
    assert "한국어" in write.system and "건조한 누아르" in write.user and "20-30대" in plan.user
    assert stored.outline.strip() in write.user
    assert [u.provider for u in stored.usage] == ["synthetic"] and stored.usage[0].output_tokens > 0
    assert list(completed.usage) == list(stored.usage)
    assert stored.quality == completed.quality
    assert stored.quality.character_count == stored.character_count == len(stored.cast) > 0
    assert stored.quality.dialogue_count > 0 and stored.quality.transition_count > 0
    assert stored.quality.target_minutes == 45  # the thriller default
    assert not stored.quality.polished
    assert stored.update_time == stored.create_time


async def test_the_polish_flag_adds_notes_without_touching_the_script(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        call = rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=project.name, title="Pilot"),
            metadata=(("x-feature-flags", "polish"),),
        )
        events = [response.event async for response in call]
    completed = events[-1].completed
    assert completed.quality.polished
    assert "Dialogue:" in completed.quality.polish_notes
    assert "Twist:" in completed.quality.polish_notes
    assert [p.stage for p in completed.episode.prompt_snapshot.prompts] == [
        "plan",
        "write",
        "polish",
    ]
    assert completed.episode.script == script_of(events)
    review = next(
        e.stage_started
        for e in events
        if e.HasField("stage_started") and e.stage_started.stage == generation_pb2.STAGE_REVIEW
    )
    assert review.provider == "synthetic"  # the polish pass runs on the write chain


async def test_the_synthetic_writer_follows_the_target_length(core_target: str) -> None:
    async with connect(core_target) as rpc:
        short = await rpc.create_project(target_episode_minutes=2)
        longer = await rpc.create_project(target_episode_minutes=12)
        a = (await rpc.generate(short.name))[-1].completed.quality
        b = (await rpc.generate(longer.name))[-1].completed.quality
    assert 1.0 <= a.estimated_minutes <= 3.0 and a.target_minutes == 2
    assert 9.0 <= b.estimated_minutes <= 15.0 and b.target_minutes == 12
    assert b.scene_count > a.scene_count and b.warnings == []


async def test_an_archived_project_gets_no_new_episodes(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project(status=project_pb2.PROJECT_STATUS_ARCHIVED)
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.generate(project.name)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "PROJECT_ARCHIVED"


async def test_an_indexing_failure_is_reported_and_the_job_still_completes(
    core_target: str, knowledge: FakeKnowledge
) -> None:
    knowledge.fail_indexing = True
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name)
    assert events[-1].HasField("completed")
    assert _progress(events, generation_pb2.STAGE_INDEX) == ["not indexed: chroma is down"]


async def test_without_story_knowledge_the_index_stage_says_so(
    core: Core, core_target: str
) -> None:
    core.runner.knowledge = None
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        events = await rpc.generate(project.name)
    assert _progress(events, generation_pb2.STAGE_INDEX) == [
        "no story knowledge on this core: not indexed"
    ]
