"""A burst of plan stages on one empty project asks Chroma once whether it is empty.

With embedded Chroma (one core writes it), callers that find an emptiness read of
the same project in flight, begun with no write since, share its answer. These
tests hold that read on a gate, so every caller arrives while it is in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from server.knowledge import ChromaKnowledgeBase, HashingEmbedder
from server.knowledge.chroma import embedded_client
from tests.server.knowledge.conftest import minsu_profile

#: Longest a step waits for something that should happen at once, in seconds.
_WAIT_SECONDS = 10.0


class _GatedProbes:
    """Counts the knowledge base's emptiness reads (`get` of one record) and holds them.

    With `only_first`, only the first read waits for the gate.
    """

    def __init__(self, knowledge: ChromaKnowledgeBase, *, only_first: bool = False) -> None:
        self.calls = 0
        #: Set once the first read arrived; reads wait for `gate`.
        self.arrived = asyncio.Event()
        self.gate = asyncio.Event()
        self._only_first = only_first
        self._get: Callable[..., Awaitable[Any]] = knowledge.collection.get
        knowledge.collection.get = self._gated  # type: ignore[method-assign]

    async def _gated(self, where: Any, **options: Any) -> Any:
        if options.get("limit") == 1 and options.get("texts") is False:
            self.calls += 1
            self.arrived.set()
            if self.calls == 1 or not self._only_first:
                await self.gate.wait()
        return await self._get(where, **options)


@pytest.fixture
async def knowledge(tmp_path: Path) -> AsyncIterator[ChromaKnowledgeBase]:
    """A knowledge base on embedded Chroma, the one writer of its data."""
    opened = ChromaKnowledgeBase(
        embedded_client(tmp_path / "chroma"), HashingEmbedder(), sole_writer=True
    )
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_concurrent_plan_stages_share_one_read(knowledge: ChromaKnowledgeBase) -> None:
    probes = _GatedProbes(knowledge)
    retrievals = [
        asyncio.create_task(knowledge.retrieve("empty", "the heist", token_budget=500))
        for _ in range(20)
    ]
    await asyncio.wait_for(probes.arrived.wait(), _WAIT_SECONDS)
    await asyncio.sleep(0.05)  # every caller has reached the probe by now
    assert probes.calls == 1
    probes.gate.set()
    assert await asyncio.gather(*retrievals) == [[]] * 20
    # The answer is remembered: the next plan stage reads nothing.
    assert await knowledge.retrieve("empty", "the heist", token_budget=500) == []
    assert probes.calls == 1


async def test_a_cancelled_caller_does_not_cancel_the_others(
    knowledge: ChromaKnowledgeBase,
) -> None:
    probes = _GatedProbes(knowledge)
    first, second, third = (
        asyncio.create_task(knowledge.retrieve("empty", "a query", token_budget=500))
        for _ in range(3)
    )
    await asyncio.wait_for(probes.arrived.wait(), _WAIT_SECONDS)
    await asyncio.sleep(0.05)
    first.cancel()
    probes.gate.set()
    assert await second == []
    assert await third == []
    assert first.cancelled()
    assert probes.calls == 1


async def test_a_caller_after_a_write_does_not_take_the_older_answer(
    knowledge: ChromaKnowledgeBase,
) -> None:
    probes = _GatedProbes(knowledge, only_first=True)
    early = asyncio.create_task(knowledge.retrieve("night", "Minsu", token_budget=500))
    await asyncio.wait_for(probes.arrived.wait(), _WAIT_SECONDS)
    # The project gains a document while the early read is held.
    await knowledge.add_document(
        "night",
        "minsu",
        minsu_profile(),
    )
    # Joining the early read (still held) would hang here.
    late = await asyncio.wait_for(
        knowledge.retrieve("night", "Minsu", token_budget=500), _WAIT_SECONDS
    )
    assert [passage.title for passage in late] == ["Minsu"]
    assert probes.calls == 2
    probes.gate.set()
    await early
