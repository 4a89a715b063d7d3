"""A cancelled Chroma call stays cancelled, even when the call returns at the same moment.

Chroma's client is synchronous: every call runs on a worker thread. Python 3.11's
`asyncio.wait_for` returns the call's result when the cancellation and the result
reach the loop in the same iteration, and the cancelled job goes on (CancelGeneration
then waits for it forever). This test puts both in one iteration on purpose.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from server.errors import Unavailable
from server.knowledge import HashingEmbedder
from server.knowledge.chroma import ChromaCollection
from tests.gateway.conftest import eventually
from tests.server.knowledge.conftest import KnowledgeFactory

#: Longest a step of the test waits for the worker thread, in seconds.
_WAIT_SECONDS = 10.0


async def test_a_call_cancelled_as_it_returns_is_cancelled() -> None:
    started, go, finished = threading.Event(), threading.Event(), threading.Event()
    opened: list[object] = []

    def connect() -> object:
        started.set()
        go.wait(_WAIT_SECONDS)
        client = object()
        opened.append(client)
        finished.set()
        return client

    collection = ChromaCollection(connect, HashingEmbedder(), timeout_seconds=_WAIT_SECONDS)
    try:
        task = asyncio.create_task(collection.handle())
        assert await asyncio.to_thread(started.wait, _WAIT_SECONDS)
        go.set()
        # The loop is held here (no await) while the worker returns and hands its result to
        # the loop, so the result and the cancellation below arrive in one loop iteration.
        assert finished.wait(_WAIT_SECONDS)
        # The thread's few steps after `return` (set_result, call_soon_threadsafe); blocking
        # on purpose: an await here would let the loop take the result first.
        time.sleep(0.2)  # noqa: ASYNC251
        task.cancel()
        await asyncio.wait({task}, timeout=_WAIT_SECONDS)
        assert opened, "the call never returned"
        assert task.done() and task.cancelled(), (
            "the cancellation was swallowed: the call went on with the client"
            f" ({task.exception() if task.done() else 'still running'!r})"
        )
    finally:
        await collection.close()


async def test_a_close_cut_short_still_ends_chromas_threads(
    make_knowledge: KnowledgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core's close limit at shutdown may cancel the close while saved episodes are
    still being written: Chroma's pools end all the same (their threads would otherwise
    hold up the process's exit), and the knowledge base takes no more calls."""
    before = set(_chroma_threads())
    knowledge = await make_knowledge()
    await knowledge.retrieve("p", "Minsu", token_budget=100)
    own = set(_chroma_threads()) - before
    assert own, "the calls ran on this knowledge base's own pool"

    async def writes_never_end() -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(knowledge._episodes, "close", writes_never_end)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await knowledge.close()
    await eventually(
        lambda: not any(t.is_alive() for t in own), "Chroma's threads ended", _WAIT_SECONDS
    )
    with pytest.raises(Unavailable, match="closed"):
        await knowledge.retrieve("p", "Minsu", token_budget=100)
    assert not set(_chroma_threads()) - before, "no pool started again"


def _chroma_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("chroma") and t.is_alive()]
