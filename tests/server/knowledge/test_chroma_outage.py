"""A Chroma server that is down: UNAVAILABLE (KNOWLEDGE_UNAVAILABLE), then recovery."""

from __future__ import annotations

import pytest
from scriptgen.v1 import knowledge_pb2

from server.errors import Unavailable
from server.knowledge import ChromaKnowledgeBase, HashingEmbedder
from server.knowledge.chroma import server_client
from tests.backends.chroma import ChromaServer
from tests.backends.ports import free_port


async def test_a_core_starts_before_chroma_and_connects_when_it_comes_up() -> None:
    port = free_port()
    knowledge = ChromaKnowledgeBase(
        server_client(f"http://127.0.0.1:{port}"),
        HashingEmbedder(),
        timeout_seconds=5.0,
        start_without_chroma=True,
    )
    await knowledge.open()  # tolerated: the server is not up yet
    server = ChromaServer(port)
    try:
        for call in (knowledge.ping(), knowledge.retrieve("p", "query", token_budget=100)):
            with pytest.raises(Unavailable) as raised:
                await call
            assert raised.value.reason == "KNOWLEDGE_UNAVAILABLE"
        server.start()
        await knowledge.ping()
        document = knowledge_pb2.KnowledgeDocument(
            kind=knowledge_pb2.KNOWLEDGE_KIND_RESEARCH_NOTE, title="Pagers", text="Pagers beep."
        )
        await knowledge.add_document("p", "pagers", document)
        server.stop()
        with pytest.raises(Unavailable):
            await knowledge.get_document("p", "pagers")
        server.start()
        assert (await knowledge.get_document("p", "pagers")).text == "Pagers beep."
    finally:
        await knowledge.close()
        server.close()


async def test_embedded_chroma_that_cannot_open_stops_the_start() -> None:
    def broken() -> object:
        raise OSError("read-only file system")

    knowledge = ChromaKnowledgeBase(broken, HashingEmbedder())
    with pytest.raises(Unavailable):
        await knowledge.open()
    await knowledge.close()
