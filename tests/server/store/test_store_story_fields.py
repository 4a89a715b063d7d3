"""Contract: the story fields of projects and the writing record of episodes, on every backend."""

from __future__ import annotations

from scriptgen.v1 import project_pb2

from server.store.migrations import migrations
from tests.server.store.conftest import Store


async def test_project_story_fields_round_trip_and_update(store: Store) -> None:
    created = await store.create_project(
        "p1",
        project_pb2.Project(
            title="밤 근무",
            language="ko",
            audience="20-30대 직장인",
            tone="건조한 유머, 누아르 조명",
            target_episode_minutes=45,
            status=project_pb2.PROJECT_STATUS_ACTIVE,
        ),
    )
    assert (created.audience, created.tone) == ("20-30대 직장인", "건조한 유머, 누아르 조명")
    assert created.target_episode_minutes == 45
    assert created.status == project_pb2.PROJECT_STATUS_ACTIVE

    updated = await store.update_project(
        "p1",
        project_pb2.Project(status=project_pb2.PROJECT_STATUS_ARCHIVED, target_episode_minutes=60),
        ["status", "target_episode_minutes"],
    )
    assert updated.status == project_pb2.PROJECT_STATUS_ARCHIVED
    assert updated.target_episode_minutes == 60
    assert updated.audience == "20-30대 직장인"  # untouched
    listed, _ = await store.list_projects(10, None)
    assert listed[0].status == project_pb2.PROJECT_STATUS_ARCHIVED


async def test_episode_writing_record_round_trips(store: Store) -> None:
    await store.create_project("p1", project_pb2.Project(title="Night Shift"))
    snapshot = project_pb2.PromptSnapshot(
        template_version="v2",
        prompts=[
            project_pb2.PromptSnapshot.StagePrompt(
                stage="plan", system="You plan.", user="지난 회: …", templates=["v2/plan.user.txt"]
            )
        ],
    )
    quality = project_pb2.QualityReport(
        scene_count=2,
        word_count=40,
        cast=["MAYA", "지수"],
        character_count=2,
        dialogue_count=5,
        transition_count=1,
        estimated_minutes=1.2,
        target_minutes=45,
        polished=True,
        polish_notes="Dialogue: sharper.",
    )
    usage = [
        project_pb2.ProviderUsage(
            provider="openai", model="gpt", input_tokens=10, output_tokens=20
        ),
        project_pb2.ProviderUsage(provider="synthetic", model="s", input_tokens=0, output_tokens=3),
    ]
    saved = await store.create_episode(
        "p1",
        project_pb2.Episode(
            title="Pilot",
            script="INT. DINER - NIGHT\n",
            outline="1. Open.\n",
            generation="generations/g1",
            scene_count=2,
            word_count=40,
            cast=["MAYA", "지수"],
            character_count=2,
            usage=usage,
            prompt_snapshot=snapshot,
            quality=quality,
        ),
    )
    assert saved.character_count == 2
    assert list(saved.usage) == usage
    assert saved.prompt_snapshot == snapshot
    assert saved.quality == quality
    assert saved.update_time == saved.create_time
    assert await store.get_episode("p1", saved.number) == saved

    summaries, _ = await store.list_episodes("p1", 10, None)
    # The list leaves out what is large: script, outline and the prompts.
    assert not summaries[0].HasField("prompt_snapshot")
    assert summaries[0].quality == quality and list(summaries[0].usage) == usage


async def test_migration_versions_agree_across_dialects() -> None:
    sqlite = [(m.version, m.name) for m in migrations("sqlite")]
    assert sqlite == [(m.version, m.name) for m in migrations("postgres")]
    assert len({version for version, _ in sqlite}) == len(sqlite)
