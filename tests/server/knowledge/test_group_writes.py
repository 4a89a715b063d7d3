"""Saved episodes' knowledge written in batches (server.knowledge.write_batch), on real Chroma.

Each test runs on embedded Chroma and on a `chroma run` server (`make_knowledge`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from scriptgen.v1 import project_pb2

from server.errors import Unavailable
from server.knowledge import ChromaKnowledgeBase, HashingEmbedder
from server.knowledge.chroma import Metadata, Record, server_client, where_all
from server.knowledge.write_batch import GroupWriter
from tests.backends.chroma import ChromaServer, throwaway_chroma
from tests.server.knowledge.conftest import KnowledgeFactory

TENANT = "default"


def _episode(
    number: int, scenes: int = 3, line: str = "The pager beeps twice."
) -> project_pb2.Episode:
    script = "".join(
        f"INT. NIGHT DESK {scene} - NIGHT\n\nMAYA\n{line} Scene {scene} of {number}.\n\n"
        for scene in range(scenes)
    )
    return project_pb2.Episode(number=number, title=f"Shift {number}", script=script, outline="A")


async def _records(knowledge: ChromaKnowledgeBase, project: str, number: int) -> list[str]:
    """The texts of one episode's records."""
    found = await knowledge.collection.get(
        where_all(tenant=TENANT, project=project, source=f"projects/{project}/episodes/{number}")
    )
    return [record.text for record in found]


def _writer(knowledge: ChromaKnowledgeBase) -> GroupWriter:
    return knowledge._episodes


async def _write_begun(knowledge: ChromaKnowledgeBase) -> None:
    """Return once the writer is writing a batch (what comes now queues behind it)."""
    for _ in range(1000):
        if _writer(knowledge).in_progress:
            return
        await asyncio.sleep(0)
    raise AssertionError("no write began")


async def test_episodes_indexed_together_go_in_a_few_writes_and_every_record_is_there(
    knowledge: ChromaKnowledgeBase,
) -> None:
    episodes = [(f"p{n % 4}", _episode(n)) for n in range(1, 41)]
    await asyncio.gather(*(knowledge.index_episode(p, e) for p, e in episodes))

    writes = _writer(knowledge).writes
    assert writes <= 2, f"40 episodes indexed at once took {writes} writes"
    for project, episode in episodes:
        texts = await _records(knowledge, project, episode.number)
        assert len(texts) == 2, "a summary and one chunk each"
        assert any(f"of {episode.number}." in text for text in texts)
    found = await knowledge.retrieve("p1", "pager beeps", token_budget=2000)
    assert found, "batched records are found by retrieval"


async def test_a_replacement_deletes_only_its_owners_records_and_new_ones_delete_nothing(
    knowledge: ChromaKnowledgeBase,
) -> None:
    """What an episode's index replaces is found by its source, then kept to its tenant and
    project: two tenants' projects of one id share source names."""
    deleted: list[list[str]] = []
    delete_ids = knowledge.collection.delete_ids

    async def counted(ids: Sequence[str]) -> None:
        deleted.append(list(ids))
        await delete_ids(ids)

    knowledge.collection.delete_ids = counted  # type: ignore[method-assign]
    long = _episode(1, scenes=40)
    for tenant in ("alpha", "beta"):
        await knowledge.index_episode("pilot", long, tenant=tenant)
    await asyncio.gather(*(knowledge.index_episode("pilot", _episode(n)) for n in range(2, 6)))
    assert deleted == [], "new episodes' sources hold nothing: no delete"
    source = "projects/pilot/episodes/1"

    async def texts(tenant: str) -> list[str]:
        found = await knowledge.collection.get(where_all(tenant=tenant, source=source))
        return [record.text for record in found]

    beta_before = await texts("beta")
    assert len(beta_before) > 2, "a summary and several chunks"
    # A record as an older core wrote it, without `space`: replaced all the same.
    vector = [1.0] + [0.0] * (knowledge.embedder.dimension - 1)
    older: Metadata = {"tenant": "alpha", "project": "pilot", "source": source, "chunk": 99}
    await knowledge.collection.upsert([f"tenants/alpha/{source}#99"], [vector], ["old"], [older])
    alpha_before = [r.id for r in await knowledge.collection.get(where_all(tenant="alpha"))]
    # Alpha's episode 1 written again, shorter: its older chunks go, beta's stay; what the
    # source holds is read 3 records a page here, both tenants' records among them.
    _writer(knowledge)._read_page = 3
    await knowledge.index_episode("pilot", _episode(1, line="Rewritten."), tenant="alpha")
    # The records the new ones overwrote (its summary and chunk 0) are not deleted after.
    rewritten = {f"tenants/alpha/{source}#summary", f"tenants/alpha/{source}#0"}
    assert rewritten <= set(alpha_before)
    assert len(deleted) == 1 and sorted(deleted[0]) == sorted(set(alpha_before) - rewritten)
    assert f"tenants/alpha/{source}#99" in deleted[0]
    alpha = await texts("alpha")
    assert len(alpha) == 2 and any("Rewritten." in text for text in alpha)
    assert sorted(await texts("beta")) == sorted(beta_before)


async def test_a_lone_episode_is_written_at_once_in_one_write(
    knowledge: ChromaKnowledgeBase,
) -> None:
    await knowledge.index_episode("solo", _episode(1))
    assert _writer(knowledge).writes == 1
    assert len(await _records(knowledge, "solo", 1)) == 2


async def test_one_source_replaced_twice_at_once_is_written_in_order_the_later_kept(
    knowledge: ChromaKnowledgeBase,
) -> None:
    writer = _writer(knowledge)
    vector = [1.0] + [0.0] * (knowledge.embedder.dimension - 1)

    async def replace(source: str, texts: list[str]) -> None:
        metadata: Metadata = {"tenant": TENANT, "source": source}
        await writer.replace(
            source,
            {"tenant": TENANT},
            [f"{source}#{n}" for n in range(len(texts))],
            [vector] * len(texts),
            texts,
            [metadata] * len(texts),
        )

    busy = asyncio.create_task(replace("busy", ["keeps the writer busy"]))
    await _write_begun(knowledge)
    await asyncio.gather(
        replace("twice", ["old draft 0", "old draft 1", "old draft 2"]),
        replace("other", ["another source, in the same batch as the old draft"]),
        replace("twice", ["final cut"]),
    )
    await busy
    assert writer.writes == 3, "one source twice: the later waits for the next batch"
    found = await knowledge.collection.get(where_all(tenant=TENANT, source="twice"))
    assert [record.text for record in found] == ["final cut"], "no old chunk is left"
    assert await knowledge.collection.get(where_all(tenant=TENANT, source="other"))


async def test_a_bad_replacement_fails_alone_and_the_others_are_written(
    knowledge: ChromaKnowledgeBase,
) -> None:
    writer = _writer(knowledge)
    vector = [1.0] + [0.0] * (knowledge.embedder.dimension - 1)

    async def replace(source: str, metadata: dict[str, object]) -> None:
        await writer.replace(
            source,
            {"tenant": TENANT},
            [f"{source}#0"],
            [vector],
            [f"text of {source}"],
            [metadata],  # type: ignore[list-item]
        )

    busy = asyncio.create_task(replace("first", {"tenant": TENANT, "source": "first"}))
    await _write_begun(knowledge)  # the next three queue behind it, one batch
    outcomes = await asyncio.gather(
        replace("good-1", {"tenant": TENANT, "source": "good-1"}),
        replace("bad", {"tenant": TENANT, "source": "bad", "nested": {"not": "allowed"}}),
        replace("good-2", {"tenant": TENANT, "source": "good-2"}),
        return_exceptions=True,
    )
    await busy
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], Unavailable)
    for source in ("first", "good-1", "good-2"):
        assert await knowledge.collection.get(where_all(tenant=TENANT, source=source))
    assert not await knowledge.collection.get(where_all(tenant=TENANT, source="bad"))


async def test_a_failed_write_leaves_the_sources_old_records_and_a_retry_replaces_them(
    knowledge: ChromaKnowledgeBase,
) -> None:
    """The new records go in before the old ones go: a write Chroma refuses loses nothing."""
    await knowledge.index_episode("kept", _episode(1, scenes=40, line="First draft."))
    before = sorted(await _records(knowledge, "kept", 1))
    assert len(before) > 2, "a summary and several chunks"
    writer = _writer(knowledge)
    source = "projects/kept/episodes/1"
    vector = [1.0] + [0.0] * (knowledge.embedder.dimension - 1)
    owner = {"tenant": TENANT, "project": "kept"}
    # A nested value Chroma refuses: the upsert fails.
    refused: Any = {**owner, "source": source, "chunk": 0, "nested": {"not": "allowed"}}
    with pytest.raises(Unavailable):
        await writer.replace(
            source,
            owner,
            [f"tenants/{TENANT}/{source}#0"],
            [vector],
            ["Second draft."],
            [refused],
        )
    assert sorted(await _records(knowledge, "kept", 1)) == before, "the old records stay whole"
    # The retry goes through: only the new records are left.
    await knowledge.index_episode("kept", _episode(1, line="Second draft."))
    after = await _records(knowledge, "kept", 1)
    assert len(after) == 2 and any("Second draft." in text for text in after)
    assert not any("First draft." in text for text in after)


async def test_forgetting_an_episode_comes_after_its_queued_index(
    knowledge: ChromaKnowledgeBase,
) -> None:
    first = asyncio.create_task(knowledge.index_episode("gone", _episode(1)))
    await _write_begun(knowledge)
    queued = asyncio.create_task(knowledge.index_episode("gone", _episode(2)))
    await asyncio.sleep(0)  # episode 2 waits for the next write
    await knowledge.forget_episode("gone", 2)
    await asyncio.gather(first, queued)
    assert await _records(knowledge, "gone", 1)
    assert not await _records(knowledge, "gone", 2), "the forget ran after the index it followed"


async def test_a_caller_cancelled_before_its_write_is_left_out(
    knowledge: ChromaKnowledgeBase,
) -> None:
    first = asyncio.create_task(knowledge.index_episode("cut", _episode(1)))
    await _write_begun(knowledge)
    kept = asyncio.create_task(knowledge.index_episode("cut", _episode(2)))
    dropped = asyncio.create_task(knowledge.index_episode("cut", _episode(3)))
    await asyncio.sleep(0)  # both queued behind the first write
    dropped.cancel()
    await asyncio.gather(first, kept)
    assert dropped.cancelled()
    assert await _records(knowledge, "cut", 2)
    assert not await _records(knowledge, "cut", 3)
    assert _writer(knowledge).writes == 2


async def test_a_caller_cancelled_during_its_write_leaves_after_it_and_a_forget_follows(
    knowledge: ChromaKnowledgeBase,
) -> None:
    indexing = asyncio.create_task(knowledge.index_episode("late", _episode(1)))
    await _write_begun(knowledge)
    indexing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await indexing
    assert not _writer(knowledge).in_progress, "the caller left once its write had ended"
    assert await _records(knowledge, "late", 1), "a write begun is finished"
    await knowledge.forget_episode("late", 1)
    assert not await _records(knowledge, "late", 1)


async def test_with_a_rest_share_the_writer_leaves_the_loop_time_between_writes(
    make_knowledge: KnowledgeFactory,
) -> None:
    knowledge = await make_knowledge(batch_records=2, batch_rest_share=1.0)
    loop = asyncio.get_running_loop()
    spans: list[tuple[float, float]] = []
    get, upsert = knowledge.collection.get, knowledge.collection.upsert

    async def timed_get(where: Mapping[str, Any], **options: Any) -> list[Record]:
        spans.append((loop.time(), 0.0))  # a write's first call: what its sources hold
        return await get(where, **options)

    async def timed_upsert(
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        texts: Sequence[str],
        metadatas: Sequence[Metadata],
    ) -> None:
        await upsert(ids, embeddings, texts, metadatas)
        spans[-1] = (spans[-1][0], loop.time())

    knowledge.collection.get = timed_get  # type: ignore[method-assign]
    knowledge.collection.upsert = timed_upsert  # type: ignore[method-assign]
    await asyncio.gather(*(knowledge.index_episode("rest", _episode(n)) for n in range(1, 5)))

    assert len(spans) == 4, "episodes of two records, two records a write"
    for (began, ended), (after, _) in itertools.pairwise(spans):
        assert after - ended >= (ended - began) - 0.002, "a rest as long as the write before"


async def test_close_fails_what_is_queued_and_finishes_the_write_in_progress(
    make_knowledge: KnowledgeFactory,
) -> None:
    knowledge = await make_knowledge()
    first = asyncio.create_task(knowledge.index_episode("shut", _episode(1)))
    await _write_begun(knowledge)
    queued = asyncio.create_task(knowledge.index_episode("shut", _episode(2)))
    await asyncio.sleep(0)
    await _writer(knowledge).close()
    await first  # the write in progress was finished
    with pytest.raises(Unavailable):
        await queued
    with pytest.raises(Unavailable):
        await knowledge.index_episode("shut", _episode(3))


async def test_a_write_cut_short_fails_its_callers_and_those_queued_instead_of_leaving_them(
    knowledge: ChromaKnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a Chroma call cancelled under the writer does (its pool shut down at shutdown)."""
    upsert = knowledge.collection.upsert
    writing = asyncio.Event()

    async def cut_short(*args: Any, **kwargs: Any) -> None:
        writing.set()
        await asyncio.sleep(0.1)  # the second episode queues meanwhile
        raise asyncio.CancelledError

    monkeypatch.setattr(knowledge.collection, "upsert", cut_short)
    first = asyncio.create_task(knowledge.index_episode("cut", _episode(1)))
    await writing.wait()
    queued = asyncio.create_task(knowledge.index_episode("cut", _episode(2)))
    async with asyncio.timeout(10):
        for call in (first, queued):
            with pytest.raises(Unavailable, match="cut short"):
                await call
    monkeypatch.setattr(knowledge.collection, "upsert", upsert)
    await knowledge.index_episode("cut", _episode(3))  # a writer again
    assert await _records(knowledge, "cut", 3)


async def test_an_unreachable_chroma_fails_each_batch_once_not_each_episode() -> None:
    with throwaway_chroma() as server:
        knowledge = ChromaKnowledgeBase(
            server_client(server.url), HashingEmbedder(), timeout_seconds=5.0
        )
        await knowledge.open()
        try:
            server.stop()
            await _ten_episodes_fail_in_one_write(knowledge, "down")
        finally:
            await knowledge.close()


async def _ten_episodes_fail_in_one_write(knowledge: ChromaKnowledgeBase, project: str) -> None:
    outcomes = await asyncio.gather(
        *(knowledge.index_episode(project, _episode(n)) for n in range(1, 11)),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes)
    assert _writer(knowledge).writes == 1, "one failed write, not retried one by one"


async def test_a_chroma_never_reached_fails_each_batch_once_too() -> None:
    """chromadb's error for a server never reached carries the connection error only as the
    exception it was raised while handling (not `from`): still one failed write per batch."""
    server = ChromaServer()  # never started
    knowledge = ChromaKnowledgeBase(
        server_client(server.url),
        HashingEmbedder(),
        timeout_seconds=5.0,
        start_without_chroma=True,
    )
    await knowledge.open()
    try:
        await _ten_episodes_fail_in_one_write(knowledge, "never")
    finally:
        await knowledge.close()
        server.close()
