"""Continuity reads the latest episodes' summaries only, however many episodes a project has.

Run on embedded Chroma and on a real `chroma run` server; the summaries a plan
reads with their texts and scores are counted on the collection's real answers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from scriptgen.v1 import project_pb2

from server.jobs.story_context import ContextBudget
from server.knowledge import EPISODE_KIND, ChromaKnowledgeBase, Passage, passage_cost, records
from server.knowledge.chroma import ScoredRecord
from server.knowledge.store import CONTINUITY_CANDIDATES, CONTINUITY_SHARE

#: More episodes than continuity ever reads.
EPISODES = CONTINUITY_CANDIDATES + 8


def _episode(number: int, project: str = "night", title: str = "Night") -> project_pb2.Episode:
    return project_pb2.Episode(
        name=f"projects/{project}/episodes/{number}",
        number=number,
        title=f"{title} {number}",
        script=f"INT. WARD - NIGHT\n\nMinsu checks the pager, night {number}.\n",
        cast=["MINSU"],
    )


def _summaries_read_whole(knowledge: ChromaKnowledgeBase) -> list[str]:
    """Ids of the episode summaries the collection returns with their texts and scores from now
    on (the metadata-only reads of every summary do not count)."""
    read: list[str] = []
    original = knowledge.collection.nearest

    async def nearest(
        embedding: Sequence[float], where: Mapping[str, Any], count: int, **options: Any
    ) -> list[ScoredRecord]:
        found = await original(embedding, where, count, **options)
        read.extend(
            record.id
            for record in found
            if record.metadata.get("role") == records.SUMMARY and record.text
        )
        return found

    knowledge.collection.nearest = nearest  # type: ignore[method-assign]
    return read


def _continuity(passages: Sequence[Passage]) -> list[str]:
    return [p.source for p in passages if p.text.startswith("Episode ")]


async def test_continuity_reads_only_the_latest_summaries(
    knowledge: ChromaKnowledgeBase,
) -> None:
    numbers = list(range(1, EPISODES + 1))
    random.Random(7).shuffle(numbers)  # the order indexed is not the story's order
    for number in numbers:
        await knowledge.index_episode("night", _episode(number))
    read = _summaries_read_whole(knowledge)

    # A budget whose continuity share would hold every episode's summary.
    roomy = await knowledge.retrieve("night", "the pager", token_budget=EPISODES * 300)
    latest = range(EPISODES - CONTINUITY_CANDIDATES + 1, EPISODES + 1)
    assert _continuity(roomy) == [f"projects/night/episodes/{n}" for n in latest], (
        "the latest episodes' summaries, oldest first"
    )
    assert len(read) == len(set(read)) == CONTINUITY_CANDIDATES, (
        "only the latest summaries are read with their texts and scored"
    )

    # The plan stage's budget: as many of the latest as fit, ending with the newest.
    read.clear()
    plan = await knowledge.retrieve(
        "night", "the pager", token_budget=ContextBudget().knowledge_tokens
    )
    kept = _continuity(plan)
    assert kept == [
        f"projects/night/episodes/{n}" for n in range(EPISODES - len(kept) + 1, EPISODES + 1)
    ]
    assert 0 < len(kept) < CONTINUITY_CANDIDATES
    assert len(read) == CONTINUITY_CANDIDATES

    await knowledge.forget_episode("night", EPISODES)
    after = _continuity(await knowledge.retrieve("night", "the pager", token_budget=EPISODES * 300))
    assert after == [f"projects/night/episodes/{n}" for n in range(8, EPISODES)], (
        "a forgotten episode makes room for an earlier one"
    )


async def test_retrieval_filters_on_one_space_clause_and_finds_only_its_own(
    knowledge: ChromaKnowledgeBase,
) -> None:
    """Every read of a retrieve filters on one `space` clause, not on (tenant, project, role)
    (Chroma weighs each clause against every project's records), and still finds only the
    project's own: another project's and another tenant's same-named project's are left out,
    and so is an episode forgotten between the summaries' two reads."""
    for number in range(1, 4):
        await knowledge.index_episode("night", _episode(number))
        await knowledge.index_episode("day", _episode(number, "day", "Day"))
        await knowledge.index_episode(
            "night", _episode(number, title="Elsewhere"), tenant="elsewhere"
        )
    filters: list[Any] = []
    original_get, original_nearest = knowledge.collection.get, knowledge.collection.nearest

    async def get(where: Mapping[str, Any], **options: Any) -> Any:
        filters.append(("get", where))
        return await original_get(where, **options)

    async def nearest(
        embedding: Sequence[float], where: Mapping[str, Any], count: int, **options: Any
    ) -> list[ScoredRecord]:
        filters.append(("nearest" + (" by ids" if "ids" in options else ""), where))
        return await original_nearest(embedding, where, count, **options)

    knowledge.collection.get = get  # type: ignore[method-assign]
    knowledge.collection.nearest = nearest  # type: ignore[method-assign]
    passages = await knowledge.retrieve("night", "the pager", token_budget=EPISODES * 300)
    summaries = {"space": records.space("default", "night", records.SUMMARY)}
    texts = {"space": records.space("default", "night", records.TEXT)}
    assert filters == [
        ("get", {"space": {"$in": [texts["space"], summaries["space"]]}}),  # the probe
        ("get", summaries),
        ("nearest by ids", summaries),
        ("nearest", texts),
        ("nearest", texts),  # the keyword search (with its $regex on the text)
    ]
    assert [p.title for p in passages if p.text.startswith("Episode ")] == [
        f"Episode {n}: Night {n}" for n in range(1, 4)
    ]
    assert {p.title for p in passages} == {f"Episode {n}: Night {n}" for n in range(1, 4)}

    # An episode forgotten between the catalog read and the search is left out, no error.
    catalog_read = original_get

    async def read_then_forget(*args: Any, **options: Any) -> Any:
        found = await catalog_read(*args, **options)
        if options.get("texts") is False and len(found) == 3:
            await knowledge.forget_episode("night", 2)
        return found

    knowledge.collection.get = read_then_forget  # type: ignore[method-assign]
    passages = await knowledge.retrieve("night", "the pager", token_budget=EPISODES * 300)
    assert [p.title for p in passages if p.text.startswith("Episode ")] == [
        "Episode 1: Night 1",
        "Episode 3: Night 3",
    ]


def test_continuity_candidates_fill_the_plan_stage_share() -> None:
    """CONTINUITY_CANDIDATES of the cheapest summary fill the plan stage's continuity share."""
    bare = project_pb2.Episode(number=1)
    cheapest = passage_cost(
        Passage(
            source=records.episode_source("night", 1),
            title=records.episode_title(bare),
            kind=EPISODE_KIND,
            text=records.episode_summary(bare),
            score=0.0,
        )
    )
    share = int(ContextBudget().knowledge_tokens * CONTINUITY_SHARE)
    assert share // cheapest <= CONTINUITY_CANDIDATES
