"""The knowledge-base contract, run on embedded Chroma and on a real `chroma run` server."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from scriptgen.v1 import knowledge_pb2, project_pb2

from server.errors import AlreadyExists, FailedPrecondition, NotFound
from server.knowledge import EPISODE_KIND, ChromaKnowledgeBase, HashingEmbedder, passage_cost
from tests.server.knowledge.conftest import KnowledgeFactory

CHARACTER = knowledge_pb2.KNOWLEDGE_KIND_CHARACTER_PROFILE
BIBLE = knowledge_pb2.KNOWLEDGE_KIND_STORY_BIBLE
WORLD = knowledge_pb2.KNOWLEDGE_KIND_WORLD_BUILDING

MINSU = (
    "민수는 서울 종합병원의 야간 간호사다. 그는 3년 전 사라진 동생을 아직 찾고 있다.\n\n"
    "민수는 말수가 적고, 환자에게만 웃는다. 병원 옥상에서 혼자 담배를 피운다.\n\n"
) * 12
BIBLE_TEXT = (
    "Night Shift is a medical thriller. Every episode covers one night at Seoul General.\n\n"
    "Rules: no one leaves the hospital before dawn; the pager never lies.\n\n"
) * 10
LIGHTHOUSE = "The old lighthouse on Gadeok island hides the smugglers' radio. " * 8


def _document(
    kind: knowledge_pb2.KnowledgeKind.ValueType, title: str, text: str
) -> knowledge_pb2.KnowledgeDocument:
    return knowledge_pb2.KnowledgeDocument(kind=kind, title=title, text=text)


def _episode(number: int, title: str, script: str, outline: str = "") -> project_pb2.Episode:
    created = timestamp_pb2.Timestamp()
    created.GetCurrentTime()
    return project_pb2.Episode(
        name=f"projects/night/episodes/{number}",
        number=number,
        title=title,
        script=script,
        outline=outline,
        cast=["MINSU", "DR. HAN"],
        create_time=created,
    )


async def test_documents_round_trip_exactly(knowledge: ChromaKnowledgeBase) -> None:
    added = await knowledge.add_document("night", "minsu", _document(CHARACTER, "민수", MINSU))
    assert added.name == "projects/night/knowledge/minsu"
    assert (added.kind, added.title, added.text) == (CHARACTER, "민수", MINSU)
    assert added.character_count == len(MINSU)
    assert added.chunk_count > 1, "a long document is split into several chunks"
    assert added.create_time.ToMicroseconds() > 0
    fetched = await knowledge.get_document("night", "minsu")
    assert fetched == added, "joining the chunks gives the document back, byte for byte"


async def test_listing_pages_filters_and_leaves_text_out(knowledge: ChromaKnowledgeBase) -> None:
    await knowledge.add_document("night", "bible", _document(BIBLE, "Series bible", BIBLE_TEXT))
    await knowledge.add_document("night", "minsu", _document(CHARACTER, "민수", MINSU))
    await knowledge.add_document("night", "gadeok", _document(WORLD, "Gadeok", LIGHTHOUSE))
    await knowledge.add_document("other", "elsewhere", _document(WORLD, "Other", LIGHTHOUSE))

    first, position = await knowledge.list_documents("night", 2, None)
    assert [d.name.rsplit("/", 1)[1] for d in first] == ["bible", "minsu"], "oldest first"
    assert all(d.text == "" and d.character_count > 0 for d in first)
    assert position is not None
    second, end = await knowledge.list_documents("night", 2, position)
    assert [d.name for d in second] == ["projects/night/knowledge/gadeok"]
    assert end is None

    characters, _ = await knowledge.list_documents("night", 10, None, CHARACTER)
    assert [d.title for d in characters] == ["민수"]
    assert (await knowledge.list_documents("empty", 10, None)) == ([], None)


async def test_document_errors(make_knowledge: KnowledgeFactory) -> None:
    knowledge = await make_knowledge(max_documents=2)
    await knowledge.add_document("night", "one", _document(BIBLE, "One", BIBLE_TEXT))
    with pytest.raises(AlreadyExists) as exists:
        await knowledge.add_document("night", "one", _document(BIBLE, "Again", "x"))
    assert exists.value.reason == "KNOWLEDGE_EXISTS"
    await knowledge.add_document("night", "two", _document(WORLD, "Two", LIGHTHOUSE))
    with pytest.raises(FailedPrecondition) as full:
        await knowledge.add_document("night", "three", _document(WORLD, "Three", "text"))
    assert full.value.reason == "KNOWLEDGE_LIMIT_REACHED"
    await knowledge.add_document("other", "three", _document(WORLD, "Three", "text"))

    await knowledge.delete_document("night", "two")
    for missing in (
        knowledge.get_document("night", "two"),
        knowledge.delete_document("night", "two"),
        knowledge.get_document("other", "one"),
    ):
        with pytest.raises(NotFound) as raised:
            await missing
        assert raised.value.reason == "KNOWLEDGE_NOT_FOUND"
    await knowledge.add_document("night", "three", _document(WORLD, "Three", "text"))


async def test_retrieval_finds_the_relevant_passage_within_the_budget(
    knowledge: ChromaKnowledgeBase,
) -> None:
    await knowledge.add_document("night", "bible", _document(BIBLE, "Series bible", BIBLE_TEXT))
    await knowledge.add_document("night", "minsu", _document(CHARACTER, "민수", MINSU))
    await knowledge.add_document("night", "gadeok", _document(WORLD, "Gadeok", LIGHTHOUSE))
    await knowledge.add_document("rival", "spy", _document(WORLD, "Lighthouse", LIGHTHOUSE))

    passages = await knowledge.retrieve("night", "the lighthouse radio on Gadeok", token_budget=400)
    assert passages, "something is retrieved"
    assert passages[0].source == "projects/night/knowledge/gadeok"
    assert passages[0].kind == "KNOWLEDGE_KIND_WORLD_BUILDING"
    assert passages[0].title == "Gadeok"
    assert all(p.source.startswith("projects/night/") for p in passages), "projects never mix"
    assert sum(passage_cost(p) for p in passages) <= 400
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)

    korean = await knowledge.retrieve("night", "민수의 동생", token_budget=400)
    assert korean[0].source == "projects/night/knowledge/minsu"
    assert "민수" in korean[0].text

    assert await knowledge.retrieve("night", "anything", token_budget=0) == []
    small = await knowledge.retrieve("night", "the lighthouse radio on Gadeok", token_budget=60)
    assert sum(passage_cost(p) for p in small) <= 60


async def test_saved_episodes_stay_in_view_and_reindexing_replaces(
    knowledge: ChromaKnowledgeBase,
) -> None:
    script = "INT. ROOFTOP - NIGHT\n\nMinsu smokes alone.\n\nMINSU\nShe was here.\n"
    await knowledge.index_episode("night", _episode(1, "Pilot", script, "Minsu finds a pager."))
    await knowledge.index_episode("night", _episode(1, "Pilot", script, "Minsu finds a pager."))
    await knowledge.add_document("night", "bible", _document(BIBLE, "Series bible", BIBLE_TEXT))

    passages = await knowledge.retrieve("night", "an unrelated query", token_budget=1000)
    summaries = [p for p in passages if p.kind == EPISODE_KIND and p.title.startswith("Episode")]
    assert [p.source for p in summaries][:1] == ["projects/night/episodes/1"]
    summary = summaries[0]
    assert summary.title == "Episode 1: Pilot"
    assert "Minsu finds a pager." in summary.text and "She was here." in summary.text
    assert sum(1 for p in passages if p.text == summary.text) == 1, "re-indexing replaced it"

    await knowledge.index_episode("night", _episode(2, "Second night", script))
    later = await knowledge.retrieve("night", "the rooftop", token_budget=1000)
    continuity = [p.source for p in later if p.text.startswith("Episode ")]
    assert continuity == ["projects/night/episodes/1", "projects/night/episodes/2"]

    await knowledge.forget_episode("night", 1)
    after = await knowledge.retrieve("night", "the rooftop", token_budget=1000)
    assert not any(p.source == "projects/night/episodes/1" for p in after)


async def test_deleting_a_project_removes_all_its_knowledge(
    knowledge: ChromaKnowledgeBase,
) -> None:
    await knowledge.add_document("night", "minsu", _document(CHARACTER, "민수", MINSU))
    await knowledge.index_episode("night", _episode(1, "Pilot", "INT. WARD - NIGHT\n\nQuiet.\n"))
    await knowledge.add_document("other", "bible", _document(BIBLE, "Bible", BIBLE_TEXT))
    await knowledge.delete_project("night")
    assert await knowledge.list_documents("night", 10, None) == ([], None)
    assert await knowledge.retrieve("night", "민수 ward quiet", token_budget=1000) == []
    assert len((await knowledge.list_documents("other", 10, None))[0]) == 1


async def test_knowledge_outlives_a_restart(make_knowledge: KnowledgeFactory) -> None:
    first = await make_knowledge()
    await first.add_document("night", "minsu", _document(CHARACTER, "민수", MINSU))
    await first.close()
    second = await make_knowledge()
    assert (await second.get_document("night", "minsu")).text == MINSU


async def test_each_embedder_has_a_collection_of_its_own(make_knowledge: KnowledgeFactory) -> None:
    wide = await make_knowledge()
    narrow = await make_knowledge(embedder=HashingEmbedder(dimension=64))
    assert wide.collection.name != narrow.collection.name
    assert narrow.collection.name.endswith("-hashing-ngram-v1-64")
    await wide.add_document("night", "minsu", _document(CHARACTER, "민수", MINSU))
    assert await narrow.list_documents("night", 10, None) == ([], None)
    handle = await narrow.collection.handle()
    assert handle.metadata["embedder"] == "hashing-ngram-v1"
    assert handle.metadata["dimension"] == 64


def _record_reads(knowledge: ChromaKnowledgeBase) -> list[str]:
    """The Chroma reads the knowledge base makes from now on, by name."""
    reads: list[str] = []
    for name in ("get", "nearest"):
        original = getattr(knowledge.collection, name)

        async def read(*args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            reads.append(_name)
            return await _original(*args, **kw)

        setattr(knowledge.collection, name, read)
    return reads


@pytest.mark.parametrize("sole_writer", [False, True])
async def test_a_project_without_knowledge_is_not_searched(
    make_knowledge: KnowledgeFactory, sole_writer: bool
) -> None:
    knowledge = await make_knowledge(sole_writer=sole_writer)
    searches = _record_reads(knowledge)
    assert await knowledge.retrieve("night", "민수 rooftop", token_budget=1000) == []
    assert searches == ["get"], "one probe for a record of the project, no search"
    searches.clear()
    assert await knowledge.retrieve("night", "민수 rooftop", token_budget=1000) == []
    assert searches == ([] if sole_writer else ["get"])

    # Another tenant's knowledge, or another project's, does not count.
    await knowledge.add_document(
        "night", "minsu", _document(CHARACTER, "민수", MINSU), tenant="beta"
    )
    await knowledge.add_document("other", "minsu", _document(CHARACTER, "민수", MINSU))
    assert await knowledge.retrieve("night", "민수 rooftop", token_budget=1000) == []

    # Indexing an episode, or adding a document, makes the project searched again.
    script = "INT. ROOFTOP - NIGHT\n\nMinsu smokes alone.\n"
    await knowledge.index_episode("night", _episode(1, "Pilot", script, "Minsu finds a pager."))
    found = await knowledge.retrieve("night", "the rooftop", token_budget=1000)
    assert [p.source for p in found][:1] == ["projects/night/episodes/1"]
    await knowledge.delete_project("night")
    assert await knowledge.retrieve("night", "민수 rooftop", token_budget=1000) == []
    await knowledge.add_document("night", "minsu", _document(CHARACTER, "민수", MINSU))
    assert any(
        p.title == "민수" for p in await knowledge.retrieve("night", "민수", token_budget=1000)
    )


async def test_a_write_while_probing_is_not_missed(make_knowledge: KnowledgeFactory) -> None:
    knowledge = await make_knowledge(sole_writer=True)
    original = knowledge.collection.get
    script = "INT. ROOFTOP - NIGHT\n\nMinsu smokes alone.\n"

    async def get_then_index(*args: Any, **kw: Any) -> Any:
        found = await original(*args, **kw)  # sees the project empty …
        knowledge.collection.get = original  # type: ignore[method-assign]
        # … and an episode is indexed before the probe answers.
        await knowledge.index_episode("night", _episode(1, "Pilot", script))
        return found

    knowledge.collection.get = get_then_index  # type: ignore[method-assign]
    assert await knowledge.retrieve("night", "rooftop", token_budget=1000) == []
    found = await knowledge.retrieve("night", "the rooftop", token_budget=1000)
    assert [p.source for p in found][:1] == ["projects/night/episodes/1"]
