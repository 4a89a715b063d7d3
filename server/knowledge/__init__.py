"""Story knowledge: documents and saved episodes, chunked, embedded and retrieved from Chroma.

The pipeline uses `KnowledgeBase` (index_episode, retrieve); ProjectService
uses `KnowledgeStore` (documents). `build_knowledge_base` picks embedded
Chroma or a Chroma server from the core's config.
"""

from server.knowledge.base import EPISODE_KIND, KnowledgeBase, KnowledgeStore, Passage
from server.knowledge.chunking import Chunk, split
from server.knowledge.embedders import MiniLMEmbedder, OpenAIEmbedder, build_embedder
from server.knowledge.embedding import Embedder
from server.knowledge.factory import build_knowledge_base
from server.knowledge.hashing import HashingEmbedder
from server.knowledge.settings import KnowledgeConfig
from server.knowledge.store import ChromaKnowledgeBase, passage_cost
from server.knowledge.text import estimate_tokens

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
