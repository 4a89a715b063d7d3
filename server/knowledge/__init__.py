"""Story knowledge: documents and saved episodes, chunked, embedded and retrieved from Chroma.

The pipeline uses `KnowledgeBase` (index_episode, retrieve); ProjectService
uses `KnowledgeStore` (documents). `build_knowledge_base` picks embedded
Chroma or a Chroma server from the core's config.

The names below are loaded on first use (PEP 562), not with the package: the core's
configuration imports `server.knowledge.settings`, and a provider worker, which needs
that configuration but no story knowledge, would otherwise load `chromadb` too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.knowledge.base import EPISODE_KIND, KnowledgeBase, KnowledgeStore, Passage
    from server.knowledge.chunking import Chunk, split
    from server.knowledge.embedders import MiniLMEmbedder, OpenAIEmbedder, build_embedder
    from server.knowledge.embedding import Embedder
    from server.knowledge.factory import build_knowledge_base
    from server.knowledge.hashing import HashingEmbedder
    from server.knowledge.settings import KnowledgeConfig
    from server.knowledge.store import ChromaKnowledgeBase, passage_cost
    from server.knowledge.text import estimate_tokens

#: Each public name, and the module it is defined in.
_HOMES = {
    "EPISODE_KIND": "base",
    "KnowledgeBase": "base",
    "KnowledgeStore": "base",
    "Passage": "base",
    "Chunk": "chunking",
    "split": "chunking",
    "MiniLMEmbedder": "embedders",
    "OpenAIEmbedder": "embedders",
    "build_embedder": "embedders",
    "Embedder": "embedding",
    "build_knowledge_base": "factory",
    "HashingEmbedder": "hashing",
    "KnowledgeConfig": "settings",
    "ChromaKnowledgeBase": "store",
    "passage_cost": "store",
    "estimate_tokens": "text",
}

__all__ = [
    "EPISODE_KIND",
    "ChromaKnowledgeBase",
    "Chunk",
    "Embedder",
    "HashingEmbedder",
    "KnowledgeBase",
    "KnowledgeConfig",
    "KnowledgeStore",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "Passage",
    "build_embedder",
    "build_knowledge_base",
    "estimate_tokens",
    "passage_cost",
    "split",
]


if not TYPE_CHECKING:  # mypy reads the imports above, and still catches a misspelt name

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        globals()[name] = value  # looked up once
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
