"""With a Chroma server, a burst of plan stages on one project shares emptiness reads that
have not begun, and never one that has (other cores write to that server too)."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from typing import Any

from server.knowledge import ChromaKnowledgeBase, HashingEmbedder
from server.knowledge.chroma import server_client
from tests.server.knowledge.conftest import minsu_profile

#: Longest a step waits for something that should happen at once, in seconds.
_WAIT_SECONDS = 10.0


async def _open(url: str, prefix: str) -> ChromaKnowledgeBase:
    knowledge = ChromaKnowledgeBase(server_client(url), HashingEmbedder(), collection_prefix=prefix)
    await knowledge.open()
    return knowledge


def _count_probes(knowledge: ChromaKnowledgeBase) -> list[int]:
    """A one-item list counting the knowledge base's emptiness reads (`get` of one record)."""
    calls = [0]
    get = knowledge.collection.get

    async def counted(where: Any, **options: Any) -> Any:
        if options.get("limit") == 1 and options.get("texts") is False:
            calls[0] += 1
        return await get(where, **options)

    knowledge.collection.get = counted  # type: ignore[method-assign]
    return calls


async def test_probes_waiting_for_a_thread_are_shared(chroma_url: str) -> None:
    knowledge = await _open(chroma_url, f"t{secrets.token_hex(6)}")
    release = threading.Event()
    try:
        # Chroma's four threads are busy: the first probe waits for its turn, unbegun.
        busy = [
            asyncio.create_task(knowledge.collection._run(release.wait, _WAIT_SECONDS))
            for _ in range(4)
        ]
        await asyncio.sleep(0.05)
        calls = _count_probes(knowledge)
        retrievals = [
            asyncio.create_task(knowledge.retrieve("empty", "the heist", token_budget=500))
            for _ in range(20)
        ]
        await asyncio.sleep(0.05)
        release.set()
        assert await asyncio.gather(*retrievals) == [[]] * 20
        await asyncio.gather(*busy)
        assert calls[0] == 1, "twenty callers, one read"
        # Not remembered with a server: the next plan stage asks again.
        assert await knowledge.retrieve("empty", "the heist", token_budget=500) == []
        assert calls[0] == 2
    finally:
        release.set()
        await knowledge.close()


async def test_a_probe_that_has_begun_is_not_joined(chroma_url: str) -> None:
    prefix = f"t{secrets.token_hex(6)}"
    knowledge, other_core = await _open(chroma_url, prefix), await _open(chroma_url, prefix)
    entered, gate = threading.Event(), threading.Event()
    run = knowledge.collection._run
    held = [False]

    async def gated_run(function: Callable[..., Any], *args: Any, **options: Any) -> Any:
        if options.get("limit") == 1 and not held[0]:
            held[0] = True
            inner = function

            def hold(*inner_args: Any, **inner_options: Any) -> Any:
                # The read first, then held: its answer is from before the other core's add.
                answer = inner(*inner_args, **inner_options)
                entered.set()
                gate.wait(_WAIT_SECONDS)
                return answer

            function = hold
        return await run(function, *args, **options)

    knowledge.collection._run = gated_run  # type: ignore[method-assign]
    try:
        early = asyncio.create_task(knowledge.retrieve("night", "Minsu", token_budget=500))
        assert await asyncio.to_thread(entered.wait, _WAIT_SECONDS), "the first read began"
        # Another core adds a document while that read is held on Chroma's thread.
        await other_core.add_document(
            "night",
            "minsu",
            minsu_profile(),
        )
        # Joining the held read would hang here (until the shorter limit), or miss the document.
        late = await asyncio.wait_for(
            knowledge.retrieve("night", "Minsu", token_budget=500), _WAIT_SECONDS / 2
        )
        assert [passage.title for passage in late] == ["Minsu"]
        gate.set()
        await early
    finally:
        gate.set()
        await knowledge.close()
        await other_core.close()
