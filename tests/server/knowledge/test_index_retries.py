"""An episode whose indexing met Chroma down is indexed again once Chroma is back.

The first three tests stop and start a real `chroma run` server; the rest drive
`IndexRetries` itself with attempts that fail as told.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator

import httpx
import pytest
from scriptgen.v1 import project_pb2

from server import Core
from server.errors import Unavailable
from server.knowledge import ChromaKnowledgeBase, HashingEmbedder, index_retries
from server.knowledge.chroma import server_client
from server.knowledge.index_retries import IndexRetries, transient
from tests.backends.chroma import ChromaServer
from tests.gateway.conftest import eventually, sample

#: Retries fast enough for a test, as many as in production.
FAST_DELAYS = (0.05,) * len(index_retries.RETRY_DELAYS_SECONDS)
#: … and for an outage of a real server, which takes a few seconds to start again. The first
#: delay leaves the test time to call what it calls during the outage before a retry.
OUTAGE_DELAYS = (1.0, 1.0, 3.0, 10.0, 20.0)
#: The episodes saved, by (tenant, project, number): the project store as another replica may
#: change it.
Saved = dict[tuple[str, str, int], project_pb2.Episode]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_retries, "RETRY_DELAYS_SECONDS", FAST_DELAYS)


def _episode(number: int, project: str = "night", generation: str = "") -> project_pb2.Episode:
    return project_pb2.Episode(
        name=f"projects/{project}/episodes/{number}",
        number=number,
        title=f"Night {number}",
        script=f"INT. WARD - NIGHT\n\nMinsu checks the pager, night {number}.\n",
        cast=["MINSU"],
        generation=generation or f"generations/{project}{number}",
    )


@pytest.fixture
async def outage(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[ChromaServer, ChromaKnowledgeBase, Saved]]:
    monkeypatch.setattr(index_retries, "RETRY_DELAYS_SECONDS", OUTAGE_DELAYS)
    store: Saved = {}

    async def saved(tenant: str, project_id: str, number: int) -> project_pb2.Episode | None:
        return store.get((tenant, project_id, number))

    server = ChromaServer()
    server.start()
    knowledge = ChromaKnowledgeBase(
        server_client(server.url), HashingEmbedder(), timeout_seconds=5.0, saved=saved
    )
    try:
        await knowledge.open()
        yield server, knowledge, store
    finally:
        await knowledge.close()
        server.close()


async def _sources(
    knowledge: ChromaKnowledgeBase, project: str = "night", tenant: str = "t1"
) -> set[str]:
    passages = await knowledge.retrieve(
        project, "Minsu pager night", token_budget=5000, tenant=tenant
    )
    return {passage.source for passage in passages}


async def _settled(knowledge: ChromaKnowledgeBase, seconds: float = 40.0) -> None:
    """Wait until no retry waits or runs; fail after `seconds`."""
    await eventually(lambda: len(knowledge._retries) == 0, "the retries to end", seconds)


async def _index_in_outage(
    knowledge: ChromaKnowledgeBase, store: Saved, tenant: str, project: str, number: int
) -> None:
    episode = _episode(number, project)
    store[(tenant, project, number)] = episode
    with pytest.raises(Unavailable) as raised:
        await knowledge.index_episode(project, episode, tenant=tenant)
    assert raised.value.reason == "KNOWLEDGE_UNAVAILABLE"
    assert raised.value.message.endswith("it is indexed again in the background")


async def test_an_episode_indexed_while_chroma_is_down_is_indexed_when_it_is_back(
    outage: tuple[ChromaServer, ChromaKnowledgeBase, Saved],
) -> None:
    server, knowledge, store = outage
    server.stop()
    await _index_in_outage(knowledge, store, "t1", "night", 1)
    assert len(knowledge._retries) == 1
    await asyncio.sleep(1.5)  # a retry into the outage still
    server.start()
    await _settled(knowledge)
    assert "projects/night/episodes/1" in await _sources(knowledge)


async def test_a_retry_indexes_only_what_is_still_saved_as_its_job_saved_it(
    outage: tuple[ChromaServer, ChromaKnowledgeBase, Saved],
) -> None:
    """Another replica may delete an episode or its project during the outage (not indexed),
    or the number may hold another job's episode by then (that one is indexed: knowledge holds
    what the store holds); each tenant's retry indexes into its own tenant."""
    server, knowledge, store = outage
    server.stop()
    for tenant, project, number in (
        ("t1", "night", 2),
        ("t1", "night", 3),
        ("t1", "night", 4),
        ("t1", "other", 1),
        ("t2", "night", 2),
    ):
        await _index_in_outage(knowledge, store, tenant, project, number)
    del store[("t1", "night", 2)]  # deleted by another replica
    del store[("t1", "other", 1)]  # its project deleted by another replica
    store[("t1", "night", 4)] = _episode(4, generation="generations/another-job")  # saved anew
    server.start()
    await _settled(knowledge)
    assert await _sources(knowledge, "night", "t1") == {
        "projects/night/episodes/3",
        "projects/night/episodes/4",
    }
    assert await _sources(knowledge, "other", "t1") == set()
    assert await _sources(knowledge, "night", "t2") == {"projects/night/episodes/2"}


async def test_a_forget_that_fails_keeps_the_retry_and_one_that_succeeds_drops_it(
    outage: tuple[ChromaServer, ChromaKnowledgeBase, Saved],
) -> None:
    server, knowledge, store = outage
    server.stop()
    await _index_in_outage(knowledge, store, "t1", "night", 5)
    await _index_in_outage(knowledge, store, "t1", "gone", 1)
    with pytest.raises(Unavailable):
        await knowledge.forget_episode("night", 5, tenant="t1")  # its delete meets the outage
    with pytest.raises(Unavailable):
        await knowledge.delete_project("gone", tenant="t1")
    assert len(knowledge._retries) == 2  # both still to be indexed: they stay saved
    server.start()
    await knowledge.forget_episode("night", 5, tenant="t1")
    await knowledge.delete_project("gone", tenant="t1")
    # The store still has them (a DeleteEpisode removes them there after the knowledge), so
    # only the forget's and the delete's own taking of the retries keeps them out.
    assert len(knowledge._retries) == 0
    await asyncio.sleep(2.5)  # past both retries' next tries, had they been kept
    assert "projects/night/episodes/5" not in await _sources(knowledge)
    assert await _sources(knowledge, "gone") == set()


def _down(cause: BaseException) -> Unavailable:
    error = Unavailable("Chroma is down", reason="KNOWLEDGE_UNAVAILABLE")
    error.__cause__ = cause
    return error


def test_only_a_service_not_reached_or_not_in_time_is_transient() -> None:
    assert transient(_down(httpx.ConnectError("refused")))
    assert transient(_down(TimeoutError()))
    assert transient(_down(_down(OSError("reset"))))  # down the chain
    assert not transient(_down(ValueError("a record of the wrong dimension")))
    assert not transient(Unavailable("story knowledge is closed", reason="KNOWLEDGE_UNAVAILABLE"))
    assert not transient(OSError("not an Unavailable"))
    # chromadb's error for a server never reached: raised while handling the connection's.
    never_reached = ValueError("Could not connect to a Chroma server")
    never_reached.__context__ = httpx.ConnectError("refused")
    assert transient(_down(never_reached))
    # A record refused, re-raised where a batch's outage was being handled: that context is
    # the batch's, not this error's.
    refused = _down(ValueError("a record of the wrong dimension"))
    refused.__context__ = _down(OSError("reset"))
    assert not transient(refused)


async def test_a_transient_failure_is_retried_each_delay_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retries = IndexRetries()
    attempts = 0

    async def down() -> bool:
        nonlocal attempts
        attempts += 1
        raise _down(OSError("connection refused"))

    assert retries.add("e1", "episode 1", down)
    await eventually(lambda: "gave up" in caplog.text, "the retries to give up")
    assert attempts == len(FAST_DELAYS)  # one retry after each delay
    assert f"gave up indexing episode 1 after {len(FAST_DELAYS)} retries" in caplog.text
    assert len(retries) == 0
    await retries.close()


async def test_another_failure_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    retries = IndexRetries()
    attempts = 0

    async def refused() -> bool:
        nonlocal attempts
        attempts += 1
        raise _down(ValueError("a record Chroma refuses"))

    retries.add("e1", "episode 1", refused)
    await eventually(lambda: "not retried" in caplog.text, "the failed retry")
    await asyncio.sleep(0.3)  # past every later delay
    assert attempts == 1
    assert len(retries) == 0
    await retries.close()


async def test_take_cancels_the_try_under_way_and_restore_puts_it_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retries = IndexRetries()
    tries = 0
    began = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> bool:
        nonlocal tries
        tries += 1
        began.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    async def down() -> bool:
        raise _down(OSError("connection refused"))

    retries.add(("t", "night", 1), "episode 1", slow)
    async with asyncio.timeout(10):
        await began.wait()
    assert len(retries) == 1  # the one under way counts
    taken = retries.take(lambda key: key == ("t", "night", 1))
    assert [pending.name for pending in taken] == ["episode 1"]
    async with asyncio.timeout(10):
        await cancelled.wait()
    assert len(retries) == 0
    retries.restore(taken)  # the delete it was taken for failed
    began.clear()
    async with asyncio.timeout(10):
        await began.wait()
    assert tries == 2
    retries.add(("t", "night", 2), "episode 2", down)
    await retries.close()
    assert len(retries) == 0
    assert "2 episodes not indexed, their retries dropped at shutdown" in caplog.text
    assert not retries.add(("t", "night", 3), "episode 3", down)


async def test_a_core_exports_how_many_episodes_wait_to_be_indexed_again(core: Core) -> None:
    knowledge = core.knowledge
    assert isinstance(knowledge, ChromaKnowledgeBase)
    began = asyncio.Event()

    async def slow() -> bool:
        began.set()
        await asyncio.sleep(3600)
        return True

    assert sample(core, "scriptgen_knowledge_index_retries") == 0
    knowledge._retries.add(("t", "night", 1), "episode 1", slow)
    knowledge._retries.add(("t", "night", 2), "episode 2", slow)
    assert sample(core, "scriptgen_knowledge_index_retries") == 2
    async with asyncio.timeout(10):
        await began.wait()  # one under way counts too
    assert sample(core, "scriptgen_knowledge_index_retries") == 2
    knowledge._retries.take(lambda key: True)
    assert sample(core, "scriptgen_knowledge_index_retries") == 0


async def test_a_core_that_never_reached_chroma_retries_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A core started before its Chroma server (`start_without_chroma`) meets chromadb's own
    error for a server never reached, which only carries the connection error as its context."""
    monkeypatch.setattr(index_retries, "RETRY_DELAYS_SECONDS", OUTAGE_DELAYS)
    server = ChromaServer()
    knowledge = ChromaKnowledgeBase(
        server_client(server.url),
        HashingEmbedder(),
        timeout_seconds=5.0,
        start_without_chroma=True,
    )
    try:
        await knowledge.open()
        await _index_in_outage(knowledge, {}, "t1", "night", 1)
        server.start()
        await _settled(knowledge)
        assert "projects/night/episodes/1" in await _sources(knowledge)
    finally:
        await knowledge.close()
        server.close()


async def test_a_project_store_down_at_a_retry_is_retried_later(
    outage: tuple[ChromaServer, ChromaKnowledgeBase, Saved],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, knowledge, store = outage
    reads = 0
    original = knowledge._saved
    assert original is not None

    async def store_down_once(tenant: str, project: str, number: int) -> project_pb2.Episode | None:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise Unavailable("the project store is down", reason="STORE_UNAVAILABLE")
        return await original(tenant, project, number)

    monkeypatch.setattr(knowledge, "_saved", store_down_once)
    server.stop()
    await _index_in_outage(knowledge, store, "t1", "night", 1)
    server.start()
    await _settled(knowledge)
    assert reads >= 2
    assert "projects/night/episodes/1" in await _sources(knowledge)
    assert "not retried" not in caplog.text


async def test_an_episode_deleted_while_its_retry_writes_is_taken_out_again(
    outage: tuple[ChromaServer, ChromaKnowledgeBase, Saved],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another replica deletes an episode's knowledge, then the episode: a retry that read it
    saved before and wrote after the knowledge's delete finds it gone once written."""
    server, knowledge, store = outage
    original = knowledge._saved
    assert original is not None
    reads = 0

    async def deleted_after_first_read(
        tenant: str, project: str, number: int
    ) -> project_pb2.Episode | None:
        nonlocal reads
        reads += 1
        episode = await original(tenant, project, number)
        store.clear()  # gone from the store from now on
        return episode

    written: list[int] = []
    index = knowledge._index_episode

    async def counted(tenant: str, project: str, episode: project_pb2.Episode) -> None:
        await index(tenant, project, episode)
        written.append(episode.number)

    monkeypatch.setattr(knowledge, "_saved", deleted_after_first_read)
    server.stop()
    await _index_in_outage(knowledge, store, "t1", "night", 1)
    monkeypatch.setattr(knowledge, "_index_episode", counted)
    server.start()
    await _settled(knowledge)
    assert reads == 2  # before its write, and after it
    assert written == [1]  # the retry did write, before it found the episode gone
    assert await _sources(knowledge) == set()


async def test_a_take_in_a_tries_last_turn_is_not_lost() -> None:
    """Taken after its try failed but before the runner looked: not queued again."""
    retries = IndexRetries()
    tries = 0
    key = ("t", "night", 1)

    async def fails_then_taken() -> bool:
        nonlocal tries
        tries += 1
        asyncio.get_running_loop().call_soon(retries.take, lambda k: k == key)
        raise _down(OSError("connection refused"))

    retries.add(key, "episode 1", fails_then_taken)
    await eventually(lambda: tries == 1, "the first retry")
    await asyncio.sleep(0.3)  # past every later delay
    assert tries == 1
    assert len(retries) == 0
    await retries.close()


async def test_a_retry_runs_in_a_context_of_its_own() -> None:
    caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
    seen: list[str] = []
    retries = IndexRetries()

    async def attempt() -> bool:
        seen.append(caller.get())
        return True

    caller.set("the request that queued it")
    retries.add("e1", "episode 1", attempt)
    await eventually(lambda: seen != [], "the retry")
    assert seen == [""]
    await retries.close()


async def test_restore_keeps_a_waiting_retry_when_it_was_due() -> None:
    now = [100.0]
    retries = IndexRetries(clock=lambda: now[0])

    async def down() -> bool:
        raise _down(OSError("connection refused"))

    retries.add("e1", "episode 1", down)
    now[0] = 101.0
    taken = retries.take(lambda key: key == "e1")
    assert [pending.due for pending in taken] == [100.0 + FAST_DELAYS[0]]
    retries.restore(taken)
    assert [pending.due for pending in retries._pending.values()] == [100.0 + FAST_DELAYS[0]]
    await retries.close()
