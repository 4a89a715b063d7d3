"""Retrieval scores with the similarities Chroma computes, and never reads an embedding back.

Run on embedded Chroma and on a real `chroma run` server. The expected scores
are the ones retrieval gave when it read every candidate's embedding and
computed the cosine itself: computed here from the stored vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy
from scriptgen.v1 import knowledge_pb2, project_pb2

from server.knowledge import ChromaKnowledgeBase, records
from server.knowledge.chroma import where_all
from server.knowledge.scoring import KEYWORD_WEIGHT, VECTOR_WEIGHT, keyword_scores
from server.knowledge.store import MIN_SCORE
from server.knowledge.text import keyword_terms

QUERY = "Minsu on the hospital rooftop with the pager"
SCRIPTS = {
    1: "INT. WARD - NIGHT\n\nMinsu checks the pager. Dr. Han sleeps at the desk.\n",
    2: "EXT. ROOFTOP - NIGHT\n\nMinsu smokes alone on the rooftop. The city hums below.\n",
    3: "INT. LOBBY - DAWN\n\nA stranger asks for Minsu's brother by name.\n",
}
DOCUMENTS = {
    "minsu": "민수는 병원 옥상에서 혼자 담배를 피운다. Minsu never leaves before dawn.\n\n" * 3,
    "gadeok": "The old lighthouse on Gadeok island hides the smugglers' radio.\n\n" * 3,
    "pager": "The pager never lies: when it rings at night, someone is dying.\n\n" * 3,
}


async def _fill(knowledge: ChromaKnowledgeBase) -> None:
    for number, script in SCRIPTS.items():
        await knowledge.index_episode(
            "night",
            project_pb2.Episode(
                name=f"projects/night/episodes/{number}",
                number=number,
                title=f"Night {number}",
                script=script,
                outline=f"Night {number} at Seoul General.",
                cast=["MINSU"],
            ),
        )
    for name, text in DOCUMENTS.items():
        document = knowledge_pb2.KnowledgeDocument(
            kind=knowledge_pb2.KNOWLEDGE_KIND_WORLD_BUILDING, title=name.title(), text=text
        )
        await knowledge.add_document("night", name, document)
    # Another project's records are never candidates.
    await knowledge.add_document(
        "other",
        "pager",
        knowledge_pb2.KnowledgeDocument(
            kind=knowledge_pb2.KNOWLEDGE_KIND_WORLD_BUILDING, title="Pager", text=DOCUMENTS["pager"]
        ),
    )


async def _stored(knowledge: ChromaKnowledgeBase, role: str) -> dict[str, Any]:
    """The project's records of `role`, read here with their embeddings."""
    collection = await knowledge.collection.handle()
    found: dict[str, Any] = collection.get(
        where=where_all(tenant="default", project="night", role=role),
        include=["documents", "embeddings"],
    )
    return found


def _cosines(query: Sequence[float], vectors: Any) -> list[float]:
    matrix = numpy.asarray(vectors, dtype=numpy.float64)
    wanted = numpy.asarray(query, dtype=numpy.float64)
    norms = numpy.linalg.norm(matrix, axis=1) * numpy.linalg.norm(wanted)
    return [float(value) for value in (matrix @ wanted) / norms]


def _cosine_scores(texts: Sequence[str], cosines: Sequence[float]) -> dict[str, float]:
    """Each text's score as retrieval computed it from the embeddings it read."""
    keyword = keyword_scores(keyword_terms(QUERY), texts)
    return {
        text: VECTOR_WEIGHT * max(0.0, min(1.0, cosine)) + KEYWORD_WEIGHT * score
        for text, cosine, score in zip(texts, cosines, keyword, strict=True)
    }


async def test_scores_equal_the_cosine_scores_of_the_stored_vectors(
    knowledge: ChromaKnowledgeBase,
) -> None:
    await _fill(knowledge)
    (query,) = await knowledge.embedder.embed([QUERY])
    chunks = await _stored(knowledge, records.TEXT)
    summaries = await _stored(knowledge, records.SUMMARY)
    assert 3 < len(chunks["ids"]) <= 40, "every chunk is among the vector candidates"
    expected_chunks = _cosine_scores(chunks["documents"], _cosines(query, chunks["embeddings"]))
    expected_summaries = _cosine_scores(
        summaries["documents"], _cosines(query, summaries["embeddings"])
    )

    passages = await knowledge.retrieve("night", QUERY, token_budget=100_000)

    continuity = [p for p in passages if p.text in expected_summaries]
    relevant = [p for p in passages if p.text not in expected_summaries]
    assert [p.source for p in continuity] == [
        records.episode_source("night", n) for n in sorted(SCRIPTS)
    ]
    for passage in continuity:
        assert abs(passage.score - expected_summaries[passage.text]) < 1e-4
    assert {p.text for p in relevant} == {
        text.strip() for text, score in expected_chunks.items() if score >= MIN_SCORE
    }
    by_text = {text.strip(): score for text, score in expected_chunks.items()}
    for passage in relevant:
        assert abs(passage.score - by_text[passage.text]) < 1e-4, passage.source
    scores = [p.score for p in relevant]
    assert scores == sorted(scores, reverse=True), "best first"
    assert relevant[0].source == records.episode_source("night", 2), "Minsu on the rooftop"


async def test_nearest_gives_the_cosine_similarity_and_what_exists(
    knowledge: ChromaKnowledgeBase,
) -> None:
    await _fill(knowledge)
    (query,) = await knowledge.embedder.embed([QUERY])
    chunks = await _stored(knowledge, records.TEXT)
    cosines = dict(zip(chunks["ids"], _cosines(query, chunks["embeddings"]), strict=True))
    where = where_all(tenant="default", project="night", role=records.TEXT)

    # Far more asked for than exist: what exists, nearest first (pytest fails on any warning).
    found = await knowledge.collection.nearest(query, where, 1000)
    assert {r.id for r in found} == set(cosines)
    assert [r.id for r in found] == sorted(cosines, key=lambda i: -cosines[i])
    for record in found:
        assert abs(record.similarity - cosines[record.id]) < 1e-5
        assert record.text and record.metadata["project"] == "night"

    # Restricted to ids: only those matching `where` — not a deleted one, not another role's.
    some = [r.id for r in found[:2]]
    gone = records.record_id("default", records.episode_source("night", 99), 0)
    summary = records.record_id("default", records.episode_source("night", 1), "summary")
    restricted = await knowledge.collection.nearest(query, where, 4, ids=[*some, gone, summary])
    assert [r.id for r in restricted] == some
    assert await knowledge.collection.nearest(query, where, 4, ids=[]) == []
    assert await knowledge.collection.nearest(query, where, 0) == []
    nothing = where_all(tenant="default", project="empty", role=records.TEXT)
    assert await knowledge.collection.nearest(query, nothing, 10) == []

    # With a document filter: the nearest of the matching records, not the first found.
    regex = {"$regex": "(?i)(pager|rooftop)"}
    matching = [
        i
        for i, text in zip(chunks["ids"], chunks["documents"], strict=True)
        if "pager" in text.lower() or "rooftop" in text.lower()
    ]
    assert len(matching) > 2
    nearest_two = await knowledge.collection.nearest(query, where, 2, where_document=regex)
    assert [r.id for r in nearest_two] == sorted(matching, key=lambda i: -cosines[i])[:2]


def _record_chroma_calls(knowledge: ChromaKnowledgeBase) -> list[tuple[str, Any, Any]]:
    """Every Chroma call the knowledge base makes from now on: (name, include, result)."""
    calls: list[tuple[str, Any, Any]] = []
    run: Callable[..., Any] = knowledge.collection._run

    async def recorded(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = await run(function, *args, **kwargs)
        calls.append((getattr(function, "__name__", ""), kwargs.get("include"), result))
        return result

    knowledge.collection._run = recorded  # type: ignore[method-assign]
    return calls


async def test_retrieval_reads_no_embedding(knowledge: ChromaKnowledgeBase) -> None:
    await _fill(knowledge)
    calls = _record_chroma_calls(knowledge)

    passages = await knowledge.retrieve("night", QUERY, token_budget=2000)

    assert passages
    names = [name for name, _, _ in calls]
    assert names.count("query") == 3, "summaries, nearest chunks, chunks containing a term"
    for name, include, result in calls:
        assert include is not None and "embeddings" not in include, name
        if isinstance(result, Mapping):
            assert result.get("embeddings") is None, name
