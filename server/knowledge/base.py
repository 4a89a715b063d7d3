"""What the rest of the core sees of story knowledge: retrieval for the pipeline, documents for
ProjectService.

`KnowledgeBase` is all the generation pipeline needs (index a saved episode,
retrieve passages for a plan); `KnowledgeStore` adds the documents writers
manage through the API. `ChromaKnowledgeBase` implements both, embedded or
against a Chroma server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scriptgen.v1 import knowledge_pb2, project_pb2

#: `Passage.kind` of a passage from a saved episode (other passages carry a KnowledgeKind name).
EPISODE_KIND = "EPISODE"


@dataclass(frozen=True)
class Passage:
    """A piece of story knowledge retrieved for a prompt."""

    #: Where it comes from: `projects/p/knowledge/d1` or `projects/p/episodes/1`.
    source: str
    #: The document's title, or `Episode 1: Pilot`.
    title: str
    #: A KnowledgeKind name (`KNOWLEDGE_KIND_CHARACTER_PROFILE`) or `EPISODE`.
    kind: str
    #: The passage itself.
    text: str
    #: Relevance, 0..1 (see server.knowledge.scoring); continuity passages of the
    #: latest episodes are included whatever their score.
    score: float


class KnowledgeBase(Protocol):
    """Story knowledge as the generation pipeline uses it.

    A project is (tenant, project id), as in the project store: every call is
    for one tenant — `tenant` when given, else the tenant in scope
    (`server.auth.guard.tenant_in_scope`: the call being served, which a job's
    pipeline inherits). Two tenants' projects of one id never share knowledge.
    """

    async def open(self) -> None:
        """Connect to Chroma and open (or create) the collection."""
        ...

    async def close(self) -> None:
        """Release the client; calls after this fail."""
        ...

    async def ping(self) -> None:
        """Raise Unavailable (KNOWLEDGE_UNAVAILABLE) when Chroma is unreachable."""
        ...

    async def index_episode(
        self, project_id: str, episode: project_pb2.Episode, *, tenant: str | None = None
    ) -> None:
        """Embed a saved episode for later plans; indexing it again replaces it."""
        ...

    async def retrieve(
        self, project_id: str, query: str, *, token_budget: int, tenant: str | None = None
    ) -> list[Passage]:
        """Passages for planning: the latest episodes' summaries, then the best matches.

        Their estimated tokens (server.knowledge.text.estimate_tokens) add up to at
        most `token_budget`.
        """
        ...


class KnowledgeStore(KnowledgeBase, Protocol):
    """Story knowledge with the documents writers add, list and delete."""

    async def add_document(
        self,
        project_id: str,
        document_id: str,
        document: knowledge_pb2.KnowledgeDocument,
        *,
        tenant: str | None = None,
    ) -> knowledge_pb2.KnowledgeDocument:
        """Chunk, embed and store a document (kind, title and text already checked).

        AlreadyExists (KNOWLEDGE_EXISTS) when the id is taken; FailedPrecondition
        (KNOWLEDGE_LIMIT_REACHED) when the project holds the most documents allowed.
        """
        ...

    async def get_document(
        self, project_id: str, document_id: str, *, tenant: str | None = None
    ) -> knowledge_pb2.KnowledgeDocument:
        """One document with its text; NotFound (KNOWLEDGE_NOT_FOUND) when absent."""
        ...

    async def list_documents(
        self,
        project_id: str,
        limit: int,
        after: Sequence[str | int] | None,
        kind: knowledge_pb2.KnowledgeKind.ValueType = knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED,
        *,
        tenant: str | None = None,
    ) -> tuple[list[knowledge_pb2.KnowledgeDocument], list[str | int] | None]:
        """Documents without text, oldest first, after a keyset position; the next position."""
        ...

    async def delete_document(
        self, project_id: str, document_id: str, *, tenant: str | None = None
    ) -> None:
        """Delete a document; NotFound (KNOWLEDGE_NOT_FOUND) when absent."""
        ...

    async def forget_episode(
        self, project_id: str, number: int, *, tenant: str | None = None
    ) -> None:
        """Remove an episode from the index (no error when it is not there)."""
        ...

    async def delete_project(self, project_id: str, *, tenant: str | None = None) -> None:
        """Remove every document and episode of a project."""
        ...
