"""An episode whose indexing met Chroma down is indexed again once Chroma is back.

The first two tests stop and start a real `chroma run` server; the rest drive
`IndexRetries` itself with attempts that fail as told.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from scriptgen.v1 import project_pb2

from server.errors import Unavailable
from server.knowledge import ChromaKnowledgeBase, HashingEmbedder, index_retries
from server.knowledge.chroma import server_client
from server.knowledge.index_retries import IndexRetries
from tests.backends.chroma import ChromaServer
from tests.gateway.conftest import eventually

#: Retries fast enough for a test, as many as in production.
FAST_DELAYS = (0.05,) * len(index_retries.RETRY_DELAYS_SECONDS)
#: … and for an outage of a real server, which takes a few seconds to start again.
OUTAGE_DELAYS = (0.2, 1.0, 3.0, 10.0, 20.0)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_retries, "RETRY_DELAYS_SECONDS", FAST_DELAYS)


def _episode(number: int, project: str = "night") -> project_pb2.Episode:
    return project_pb2.Episode(
        name=f"projects/{project}/episodes/{number}",
        number=number,
        title=f"Night {number}",
        script=f"INT. WARD - NIGHT\n\nMinsu checks the pager, night {number}.\n",
        cast=["MINSU"],
    )


@pytest.fixture
async def outage(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[ChromaServer, ChromaKnowledgeBase]]:
    monkeypatch.setattr(index_retries, "RETRY_DELAYS_SECONDS", OUTAGE_DELAYS)
    server = ChromaServer()
    server.start()
    knowledge = ChromaKnowledgeBase(
        server_client(server.url), HashingEmbedder(), timeout_seconds=5.0
    )
    try:
        await knowledge.open()
        yield server, knowledge
    finally:
        await knowledge.close()
        server.close()


async def _sources(knowledge: ChromaKnowledgeBase, project: str = "night") -> set[str]:
    passages = await knowledge.retrieve(project, "Minsu pager night", token_budget=5000)
    return {passage.source for passage in passages}


async def _indexed_within(knowledge: ChromaKnowledgeBase, source: str, seconds: float) -> None:
    """Wait until retrieval finds `source` (a retry indexed it); fail after `seconds`."""
    for _ in range(int(seconds / 0.1)):
        if source in await _sources(knowledge):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{source} was not indexed again within {seconds:g} s")


async def test_an_episode_indexed_while_chroma_is_down_is_indexed_when_it_is_back(
    outage: tuple[ChromaServer, ChromaKnowledgeBase],
) -> None:
    server, knowledge = outage
    server.stop()
    with pytest.raises(Unavailable) as raised:
        await knowledge.index_episode("night", _episode(1))
    assert raised.value.reason == "KNOWLEDGE_UNAVAILABLE"
    assert raised.value.message.endswith("it is indexed again in the background")
    await asyncio.sleep(0.5)  # a retry or two, into the outage still
    server.start()
    await _indexed_within(knowledge, "projects/night/episodes/1", 30)
    assert len(knowledge._retries) == 0


async def test_an_episode_forgotten_during_the_outage_is_not_indexed_after_it(
    outage: tuple[ChromaServer, ChromaKnowledgeBase],
) -> None:
    """Forgetting an episode, or deleting its project, drops its retry (their own deletes
    meet the outage too, and are asked again by their callers)."""
    server, knowledge = outage
    server.stop()
    for project, number in (("night", 2), ("night", 3), ("other", 1)):
        with pytest.raises(Unavailable):
            await knowledge.index_episode(project, _episode(number, project))
    assert len(knowledge._retries) == 3
    with pytest.raises(Unavailable):
        await knowledge.forget_episode("night", 2)
    with pytest.raises(Unavailable):
        await knowledge.delete_project("other")
    assert len(knowledge._retries) == 1
    server.start()
    await _indexed_within(knowledge, "projects/night/episodes/3", 30)
    await asyncio.sleep(1.5)  # well past the dropped ones' next retries, had they been kept
    assert "projects/night/episodes/2" not in await _sources(knowledge)
    assert await _sources(knowledge, "other") == set()


async def test_unavailable_is_retried_each_delay_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retries = IndexRetries()
    attempts = 0

    async def down() -> None:
        nonlocal attempts
        attempts += 1
        raise Unavailable("Chroma is down", reason="KNOWLEDGE_UNAVAILABLE")

    assert retries.add("e1", "episode 1", down)
    await eventually(lambda: "gave up" in caplog.text, "the retries to give up")
    assert attempts == len(FAST_DELAYS)
    assert f"gave up indexing episode 1 after {len(FAST_DELAYS)} retries" in caplog.text
    await retries.close()


async def test_another_error_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    retries = IndexRetries()
    attempts = 0

    async def broken() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("a record Chroma refuses")

    retries.add("e1", "episode 1", broken)
    await eventually(lambda: "not retried" in caplog.text, "the failed retry")
    await asyncio.sleep(0.5)
    assert attempts == 1
    assert "indexing episode 1 failed again, not retried" in caplog.text
    await retries.close()


async def test_a_drop_cancels_the_retry_under_way_and_close_stops_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retries = IndexRetries()
    began = asyncio.Event()
    finished: list[str] = []

    async def slow() -> None:
        began.set()
        await asyncio.sleep(3600)
        finished.append("slow")

    async def quick() -> None:
        raise Unavailable("Chroma is down", reason="KNOWLEDGE_UNAVAILABLE")

    retries.add(("t", "night", 1), "episode 1", slow)
    async with asyncio.timeout(10):
        await began.wait()
    retries.drop(lambda key: key == ("t", "night", 1))
    retries.add(("t", "night", 2), "episode 2", quick)
    await asyncio.sleep(0)
    assert len(retries) == 1 and finished == []
    await retries.close()
    assert len(retries) == 0
    assert "1 episodes not indexed, their retries dropped at shutdown: episode 2" in caplog.text
    assert not retries.add(("t", "night", 3), "episode 3", quick)
