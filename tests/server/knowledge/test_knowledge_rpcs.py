"""The knowledge RPCs on a real core (embedded Chroma), and story knowledge in the pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import knowledge_pb2, project_service_pb2

from server import Core
from tests.server.rpc import Stubs, connect, error_info, field_violations

CHARACTER = knowledge_pb2.KNOWLEDGE_KIND_CHARACTER_PROFILE
WORLD = knowledge_pb2.KNOWLEDGE_KIND_WORLD_BUILDING
MINSU = "민수는 야간 간호사다. 그는 옥상에서 사라진 동생의 호출기를 발견한다.\n\n" * 20


@pytest.fixture
async def stubs(core: Core) -> AsyncIterator[Stubs]:
    async with connect(f"127.0.0.1:{core.grpc_port}") as opened:
        yield opened


async def _add(
    stubs: Stubs,
    parent: str,
    kind: knowledge_pb2.KnowledgeKind.ValueType = CHARACTER,
    title: str = "민수",
    text: str = MINSU,
    document_id: str = "",
) -> knowledge_pb2.KnowledgeDocument:
    response = await stubs.projects.AddKnowledgeDocument(
        project_service_pb2.AddKnowledgeDocumentRequest(
            parent=parent,
            document=knowledge_pb2.KnowledgeDocument(kind=kind, title=title, text=text),
            document_id=document_id,
        )
    )
    return response.document


async def test_add_list_get_delete(stubs: Stubs) -> None:
    project = await stubs.create_project("야간 근무", language="ko")
    added = await _add(stubs, project.name, document_id="minsu")
    assert added.name == f"{project.name}/knowledge/minsu"
    assert (added.text, added.character_count) == (MINSU, len(MINSU))
    generated = await _add(stubs, project.name, WORLD, "Seoul General", "A hospital. " * 10)
    assert generated.name.startswith(f"{project.name}/knowledge/d")

    listed = await stubs.projects.ListKnowledgeDocuments(
        project_service_pb2.ListKnowledgeDocumentsRequest(parent=project.name, page_size=1)
    )
    assert [d.name for d in listed.documents] == [added.name]
    assert listed.documents[0].text == "" and listed.documents[0].title == "민수"
    rest = await stubs.projects.ListKnowledgeDocuments(
        project_service_pb2.ListKnowledgeDocumentsRequest(
            parent=project.name, page_size=1, page_token=listed.next_page_token
        )
    )
    assert [d.name for d in rest.documents] == [generated.name] and not rest.next_page_token
    worlds = await stubs.projects.ListKnowledgeDocuments(
        project_service_pb2.ListKnowledgeDocumentsRequest(parent=project.name, kind=WORLD)
    )
    assert [d.name for d in worlds.documents] == [generated.name]

    fetched = await stubs.projects.GetKnowledgeDocument(
        project_service_pb2.GetKnowledgeDocumentRequest(name=added.name)
    )
    assert fetched.document == added
    await stubs.projects.DeleteKnowledgeDocument(
        project_service_pb2.DeleteKnowledgeDocumentRequest(name=added.name)
    )
    with pytest.raises(aio.AioRpcError) as missing:
        await stubs.projects.GetKnowledgeDocument(
            project_service_pb2.GetKnowledgeDocumentRequest(name=added.name)
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(missing.value).reason == "KNOWLEDGE_NOT_FOUND"


async def test_documents_are_checked_field_by_field(stubs: Stubs) -> None:
    project = await stubs.create_project()
    cases: list[tuple[dict[str, object], str]] = [
        ({"kind": knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED}, "document.kind"),
        ({"kind": 99}, "document.kind"),
        ({"title": ""}, "document.title"),
        ({"title": "x" * 201}, "document.title"),
        ({"text": "   "}, "document.text"),
        ({"text": "x" * 200_001}, "document.text"),
        ({"text": "bell\x07"}, "document.text"),
        ({"document_id": "Bad_Id"}, "document_id"),
    ]
    for overrides, field in cases:
        fields: dict[str, object] = {"kind": CHARACTER, "title": "T", "text": "text"}
        fields.update(overrides)
        document_id = str(fields.pop("document_id", ""))
        with pytest.raises(aio.AioRpcError) as raised:
            await stubs.projects.AddKnowledgeDocument(
                project_service_pb2.AddKnowledgeDocumentRequest(
                    parent=project.name,
                    document=knowledge_pb2.KnowledgeDocument(**fields),  # type: ignore[arg-type]
                    document_id=document_id,
                )
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert list(field_violations(raised.value)) == [field]
    largest = await _add(stubs, project.name, text="가" * 200_000)
    assert largest.character_count == 200_000


async def test_names_and_projects_are_checked(stubs: Stubs) -> None:
    for name in (
        "projects/p/knowledge",
        "projects/p/episodes/1",
        "knowledge/d",
        "projects/p/knowledge/Bad",
    ):
        with pytest.raises(aio.AioRpcError) as raised:
            await stubs.projects.GetKnowledgeDocument(
                project_service_pb2.GetKnowledgeDocumentRequest(name=name)
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert list(field_violations(raised.value)) == ["name"]
    for call in (
        _add(stubs, "projects/missing"),
        stubs.projects.ListKnowledgeDocuments(
            project_service_pb2.ListKnowledgeDocumentsRequest(parent="projects/missing")
        ),
        stubs.projects.DeleteKnowledgeDocument(
            project_service_pb2.DeleteKnowledgeDocumentRequest(name="projects/missing/knowledge/d")
        ),
    ):
        with pytest.raises(aio.AioRpcError) as absent:
            await call
        assert error_info(absent.value).reason == "PROJECT_NOT_FOUND"
    with pytest.raises(aio.AioRpcError) as token:
        await stubs.projects.ListKnowledgeDocuments(
            project_service_pb2.ListKnowledgeDocumentsRequest(parent="projects/p", page_token="x")
        )
    assert list(field_violations(token.value)) == ["page_token"]


async def test_deleting_a_project_deletes_its_knowledge(stubs: Stubs) -> None:
    project = await stubs.create_project("Night Shift")
    await _add(stubs, project.name, document_id="minsu")
    await stubs.generate(project.name, "Pilot")
    with pytest.raises(aio.AioRpcError) as refused:
        await stubs.projects.DeleteProject(
            project_service_pb2.DeleteProjectRequest(name=project.name)
        )
    assert error_info(refused.value).reason == "PROJECT_HAS_EPISODES"
    kept = await stubs.projects.ListKnowledgeDocuments(
        project_service_pb2.ListKnowledgeDocumentsRequest(parent=project.name)
    )
    assert len(kept.documents) == 1, "a refused delete keeps the knowledge"

    await stubs.projects.DeleteProject(
        project_service_pb2.DeleteProjectRequest(name=project.name, force=True)
    )
    project_id = project.name.removeprefix("projects/")
    again = await stubs.projects.CreateProject(
        project_service_pb2.CreateProjectRequest(project=project, project_id=project_id)
    )
    listed = await stubs.projects.ListKnowledgeDocuments(
        project_service_pb2.ListKnowledgeDocumentsRequest(parent=again.project.name)
    )
    assert list(listed.documents) == []


async def test_knowledge_reaches_the_plan_and_episode_one_is_in_view_for_episode_two(
    core: Core, stubs: Stubs
) -> None:
    project = await stubs.create_project("야간 근무", language="ko")
    await _add(stubs, project.name, document_id="minsu")
    await stubs.generate(project.name, "첫 번째 밤", description="민수가 동생의 호출기를 찾는다")
    first = (
        await stubs.projects.GetEpisode(
            project_service_pb2.GetEpisodeRequest(name=f"{project.name}/episodes/1")
        )
    ).episode
    plan = next(p for p in first.prompt_snapshot.prompts if p.stage == "plan")
    assert "옥상에서 사라진 동생의 호출기" in plan.user, "retrieved knowledge reaches the prompt"

    passages = await core.knowledge.retrieve(
        project.name.removeprefix("projects/"), "두 번째 밤", token_budget=1500
    )
    assert f"{project.name}/episodes/1" in [p.source for p in passages], "episode 1 was indexed"

    await stubs.generate(project.name, "두 번째 밤", description="민수가 옥상으로 돌아간다")
    second = (
        await stubs.projects.GetEpisode(
            project_service_pb2.GetEpisodeRequest(name=f"{project.name}/episodes/2")
        )
    ).episode
    plan = next(p for p in second.prompt_snapshot.prompts if p.stage == "plan")
    assert "Episode 1: 첫 번째 밤" in plan.user, "episode 2 is planned with episode 1 in view"

    await stubs.projects.DeleteEpisode(
        project_service_pb2.DeleteEpisodeRequest(name=f"{project.name}/episodes/1")
    )
    after = await core.knowledge.retrieve(
        project.name.removeprefix("projects/"), "첫 번째 밤", token_budget=1500
    )
    assert f"{project.name}/episodes/1" not in [p.source for p in after]
