"""`make_knowledge`: knowledge bases on embedded Chroma, then on a real `chroma run` server.

Every knowledge base a test opens shares its Chroma (the same folder, or the
same server under this test's collection prefix), so a second one stands in
for a second core or a restart.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from scriptgen.v1 import knowledge_pb2

from server.knowledge import ChromaKnowledgeBase, Embedder, HashingEmbedder
from server.knowledge.chroma import embedded_client, server_client
from tests.backends.chroma import chroma_url  # noqa: F401


class KnowledgeFactory(Protocol):
    """Opens another knowledge base on this test's Chroma."""

    async def __call__(
        self, *, embedder: Embedder | None = None, **options: Any
    ) -> ChromaKnowledgeBase: ...


@pytest.fixture(params=["embedded", "server"])
async def make_knowledge(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[KnowledgeFactory]:
    """Open knowledge bases on this test's Chroma; all are closed afterwards."""
    opened: list[ChromaKnowledgeBase] = []
    # The server is shared by the session: collections of this test's own.
    prefix = f"t{secrets.token_hex(6)}"
    if request.param == "embedded":
        connect = embedded_client(tmp_path / "chroma")
    else:
        connect = server_client(request.getfixturevalue("chroma_url"))

    async def open_knowledge(
        *, embedder: Embedder | None = None, **options: Any
    ) -> ChromaKnowledgeBase:
        options.setdefault("collection_prefix", prefix)
        knowledge = ChromaKnowledgeBase(connect, embedder or HashingEmbedder(), **options)
        await knowledge.open()
        opened.append(knowledge)
        return knowledge

    try:
        yield open_knowledge
    finally:
        for knowledge in opened:
            await knowledge.close()


@pytest.fixture
async def knowledge(make_knowledge: KnowledgeFactory) -> ChromaKnowledgeBase:
    """One open knowledge base."""
    return await make_knowledge()


def minsu_profile() -> knowledge_pb2.KnowledgeDocument:
    """A character profile that retrieval for "Minsu" finds (tests of reads racing a write)."""
    return knowledge_pb2.KnowledgeDocument(
        kind=knowledge_pb2.KNOWLEDGE_KIND_CHARACTER_PROFILE,
        title="Minsu",
        text="Minsu runs the night shift at the harbour and never sleeps.",
    )
