"""Story knowledge per tenant, on embedded Chroma and a real `chroma run` server.

A project is (tenant, id): two tenants' projects `pilot` never share a record.
A collection of schema 1 (records without a tenant) is adopted when first
opened: each record goes to the tenant of the oldest project of its id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import MethodType
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from scriptgen.v1 import knowledge_pb2, project_pb2

from server.auth.guard import CALLER, Caller
from server.errors import NotFound
from server.knowledge import ChromaKnowledgeBase, Passage, chroma, records
from server.knowledge.chroma import ChromaCollection, where_all
from tests.server.knowledge.conftest import KnowledgeFactory

CHARACTER = knowledge_pb2.KNOWLEDGE_KIND_CHARACTER_PROFILE


def _document(title: str, text: str) -> knowledge_pb2.KnowledgeDocument:
    return knowledge_pb2.KnowledgeDocument(kind=CHARACTER, title=title, text=text)


def _episode(number: int, title: str, script: str) -> project_pb2.Episode:
    created = timestamp_pb2.Timestamp()
    created.GetCurrentTime()
    return project_pb2.Episode(
        name=f"projects/pilot/episodes/{number}",
        number=number,
        title=title,
        script=script,
        outline=f"{title} outline",
        create_time=created,
    )


async def test_two_tenants_projects_of_one_id_share_nothing(
    knowledge: ChromaKnowledgeBase,
) -> None:
    await knowledge.add_document(
        "pilot", "hero", _document("Mina", "Mina keeps the lighthouse lamp."), tenant="alpha"
    )
    # The same project and document ids, another tenant: no collision, no overwrite.
    await knowledge.add_document(
        "pilot", "hero", _document("Jun", "Jun drives the night bus."), tenant="beta"
    )
    await knowledge.index_episode(
        "pilot", _episode(1, "Lamp", "INT. LIGHTHOUSE - NIGHT\n\nMina climbs."), tenant="alpha"
    )
    alpha = await knowledge.get_document("pilot", "hero", tenant="alpha")
    beta = await knowledge.get_document("pilot", "hero", tenant="beta")
    assert (alpha.title, beta.title) == ("Mina", "Jun")
    listed, _ = await knowledge.list_documents("pilot", 10, None, tenant="beta")
    assert [d.title for d in listed] == ["Jun"]

    seen_by_beta = await knowledge.retrieve(
        "pilot", "Mina lighthouse lamp Jun", token_budget=2000, tenant="beta"
    )
    assert [p.title for p in seen_by_beta] == ["Jun"]
    seen_by_alpha = await knowledge.retrieve(
        "pilot", "Mina lighthouse lamp", token_budget=2000, tenant="alpha"
    )
    assert {p.title for p in seen_by_alpha} == {"Mina", "Episode 1: Lamp"}

    # Without a tenant, the caller in scope decides (a job's pipeline runs in its call's context).
    token = CALLER.set(Caller("beta"))
    try:
        assert (await knowledge.get_document("pilot", "hero")).title == "Jun"
    finally:
        CALLER.reset(token)

    await knowledge.delete_project("pilot", tenant="alpha")
    with pytest.raises(NotFound):
        await knowledge.get_document("pilot", "hero", tenant="alpha")
    assert (await knowledge.get_document("pilot", "hero", tenant="beta")).title == "Jun"
    with pytest.raises(NotFound):
        await knowledge.delete_document("pilot", "hero", tenant="gamma")


async def _downgrade(knowledge: ChromaKnowledgeBase, schema: int) -> None:
    """Make the collection look written before `space` (schema 2) or, for schema 1, before
    tenants too: no `tenant` key, ids without the `tenants/{t}/` prefix."""
    collection = await knowledge.collection.handle()
    found = collection.get(include=["metadatas", "documents", "embeddings"])
    collection.delete(ids=list(found["ids"]))
    dropped = {"space", "tenant"} if schema == 1 else {"space"}
    metadatas = [{k: v for k, v in m.items() if k not in dropped} for m in found["metadatas"]]
    collection.upsert(
        # Schema 1's ids: projects/…
        ids=[i.split("/", 2)[2] if schema == 1 else i for i in found["ids"]],
        embeddings=[list(e) for e in found["embeddings"]],
        documents=list(found["documents"]),
        metadatas=metadatas,
    )
    collection.modify(metadata={**dict(collection.metadata), "schema": schema})


def _owners(table: dict[str, str]) -> Callable[[str], Awaitable[str | None]]:
    async def owner(project_id: str) -> str | None:
        return table.get(project_id)

    return owner


async def test_a_collection_from_before_tenants_is_adopted(
    make_knowledge: KnowledgeFactory,
) -> None:
    old = await make_knowledge()
    await old.add_document("pilot", "hero", _document("Mina", "Mina keeps the lamp."))
    await old.add_document("gone", "ghost", _document("Ghost", "A project deleted since."))
    await old.index_episode("pilot", _episode(1, "Lamp", "INT. LIGHTHOUSE - NIGHT\n\nMina."))
    await _downgrade(old, 1)
    await old.close()

    options: dict[str, Any] = {"collection_prefix": old.collection.name.rsplit("-hashing", 1)[0]}
    adopted = await make_knowledge(owners=_owners({"pilot": "acme"}), **options)
    assert (await adopted.get_document("pilot", "hero", tenant="acme")).title == "Mina"
    with pytest.raises(NotFound):
        await adopted.get_document("pilot", "hero", tenant="default")
    passages = await adopted.retrieve("pilot", "Mina lamp", token_budget=2000, tenant="acme")
    assert "Episode 1: Lamp" in {p.title for p in passages}
    # A record of a project that is gone belongs to nobody: not read, not retrieved.
    for tenant in ("acme", "default"):
        with pytest.raises(NotFound):
            await adopted.get_document("gone", "ghost", tenant=tenant)
        assert (
            await adopted.retrieve("gone", "Ghost project", token_budget=2000, tenant=tenant) == []
        )
    collection = await adopted.collection.handle()
    assert collection.metadata["schema"] == 3
    untagged = collection.get(where=where_all(project="pilot"), include=["metadatas"])
    assert {m["tenant"] for m in untagged["metadatas"]} == {"acme"}
    assert {m["space"] for m in untagged["metadatas"]} == {
        records.space("acme", "pilot", role) for role in records.ROLES
    }
    # Written again by its tenant, a record replaces the adopted one (no duplicates).
    await adopted.index_episode(
        "pilot", _episode(1, "Lamp", "INT. LIGHTHOUSE - NIGHT\n\nMina."), tenant="acme"
    )
    summaries = collection.get(
        where=where_all(tenant="acme", project="pilot", role="summary"), include=[]
    )
    assert len(summaries["ids"]) == 1


async def test_a_collection_from_before_spaces_is_given_them(
    make_knowledge: KnowledgeFactory,
) -> None:
    """Schema 2 (records with a tenant, without `space`): each record gets the space of its
    tenant, project and role when the collection is first opened, and retrieval, which
    filters on spaces alone, finds them."""
    old = await make_knowledge()
    await old.add_document(
        "pilot", "hero", _document("Mina", "Mina keeps the lamp."), tenant="acme"
    )
    await old.index_episode(
        "pilot", _episode(1, "Lamp", "INT. LIGHTHOUSE - NIGHT\n\nMina."), tenant="acme"
    )
    await old.index_episode("pilot", _episode(1, "Bus", "INT. BUS - NIGHT\n\nJun."))
    await _downgrade(old, 2)
    await old.close()

    options: dict[str, Any] = {"collection_prefix": old.collection.name.rsplit("-hashing", 1)[0]}
    upgraded = await make_knowledge(owners=_owners({}), **options)
    passages = await upgraded.retrieve("pilot", "Mina lamp", token_budget=2000, tenant="acme")
    assert {p.title for p in passages} == {"Mina", "Episode 1: Lamp"}
    passages = await upgraded.retrieve("pilot", "Jun bus", token_budget=2000)
    assert {p.title for p in passages} == {"Episode 1: Bus"}
    collection = await upgraded.collection.handle()
    assert collection.metadata["schema"] == 3
    stored = collection.get(include=["metadatas"])
    assert len(stored["ids"]) == 5  # a document chunk, and each episode's summary and chunk
    for metadata in stored["metadatas"]:
        tenant, role = metadata["tenant"], metadata["role"]
        assert metadata["space"] == records.space(str(tenant), "pilot", str(role))


async def _schema_2_night_and_old(make_knowledge: KnowledgeFactory) -> dict[str, Any]:
    """A schema-2 collection of two projects' three episodes each, indexed in turns (so
    their records alternate); the options that open it again."""
    old = await make_knowledge()
    for number in range(1, 4):
        for project in ("old", "night"):
            episode = _episode(number, f"{project} {number}", f"INT. WARD - NIGHT\n\n{project}.")
            episode.name = f"projects/{project}/episodes/{number}"
            await old.index_episode(project, episode)
    await _downgrade(old, 2)
    await old.close()
    return {"collection_prefix": old.collection.name.rsplit("-hashing", 1)[0]}


def _night_titles(passages: Sequence[Passage]) -> set[str]:
    return {p.title for p in passages}


async def test_records_deleted_during_an_upgrade_leave_none_without_a_space(
    make_knowledge: KnowledgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another core deleting records while the upgrade pages through the collection shifts
    its offsets: a pass skips records, so passes repeat until one finds nothing to adopt."""
    options = await _schema_2_night_and_old(make_knowledge)
    monkeypatch.setattr(chroma, "_UPGRADE_PAGE", 4)
    pages: list[int] = []
    run = ChromaCollection._run

    async def deleting_after_the_first_page(
        self: ChromaCollection, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        result = await run(self, function, *args, **kwargs)
        if isinstance(function, MethodType) and function.__name__ == "get" and "offset" in kwargs:
            pages.append(kwargs["offset"])
            if len(pages) == 1:  # project `old` deleted by a core still on schema 2
                raw: Any = function.__self__  # the Chroma collection
                raw.delete(where={"project": "old"})
        return result

    monkeypatch.setattr(ChromaCollection, "_run", deleting_after_the_first_page)
    upgraded = await make_knowledge(**options)
    monkeypatch.setattr(ChromaCollection, "_run", run)
    assert pages.count(0) >= 2, "a second pass"
    collection = await upgraded.collection.handle()
    assert collection.metadata["schema"] == 3
    stored = collection.get(include=["metadatas"])
    assert len(stored["ids"]) == 6
    assert all("space" in metadata for metadata in stored["metadatas"])
    passages = await upgraded.retrieve("night", "night ward", token_budget=4000)
    assert _night_titles(passages) == {f"Episode {n}: night {n}" for n in range(1, 4)}


async def test_an_upgrade_cut_short_is_finished_by_the_next_call(
    make_knowledge: KnowledgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chroma failing between two pages' updates: the collection stays at schema 2, and the
    next call finishes the upgrade."""
    options = await _schema_2_night_and_old(make_knowledge)
    monkeypatch.setattr(chroma, "_UPGRADE_PAGE", 4)
    updates: list[int] = []
    run = ChromaCollection._run

    def refuse() -> None:
        raise OSError("Chroma went away")

    async def failing_second_update(
        self: ChromaCollection, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        if getattr(function, "__name__", "") == "update":
            updates.append(len(kwargs["ids"]))
            if len(updates) == 2:
                return await run(self, refuse)
        return await run(self, function, *args, **kwargs)

    monkeypatch.setattr(ChromaCollection, "_run", failing_second_update)
    # Opening fails, logged (a core may start before its Chroma server): nothing is served.
    upgraded = await make_knowledge(start_without_chroma=True, **options)
    assert updates == [4, 4]
    client = upgraded.collection._client
    assert client.get_collection(upgraded.collection.name).metadata["schema"] == 2
    passages = await upgraded.retrieve("night", "night ward", token_budget=4000)
    assert _night_titles(passages) == {f"Episode {n}: night {n}" for n in range(1, 4)}
    collection = await upgraded.collection.handle()
    assert collection.metadata["schema"] == 3
    stored = collection.get(include=["metadatas"])
    assert len(stored["ids"]) == 12
    assert all("space" in metadata for metadata in stored["metadatas"])
