"""ProjectService's story-knowledge RPCs, validated against the documented limits.

`KnowledgeRpcs` is mixed into `ProjectServicer`: it implements
Add/List/Get/DeleteKnowledgeDocument on the project store (does the project
exist?) and the knowledge store (Chroma), and the hooks that keep knowledge in
step when a project or an episode is deleted.

| field                   | limit                                                         |
|-------------------------|---------------------------------------------------------------|
| document.kind           | required: a KnowledgeKind other than UNSPECIFIED              |
| document.title          | 1..200 characters, no control characters                      |
| document.text           | 1..200000 characters; newlines and tabs, no other controls    |
| document_id             | `[a-z][a-z0-9-]{0,62}`, optional (random `d…` otherwise)      |
| documents per project   | SCRIPTGEN_KNOWLEDGE_MAX_DOCUMENTS (100): FAILED_PRECONDITION  |
|                         | KNOWLEDGE_LIMIT_REACHED beyond it                             |
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

from grpc import aio
from scriptgen.v1 import knowledge_pb2, project_service_pb2

from server import limits, pagination
from server.auth.guard import tenant_in_scope
from server.errors import FieldViolation, Unavailable, invalid
from server.knowledge import KnowledgeStore
from server.metrics import CoreMetrics
from server.services.calls import unary
from server.store.base import ProjectStore

Context = aio.ServicerContext[Any, Any]
TEXT_MAX: Final = 200_000
_ID: Final = re.compile(r"[a-z][a-z0-9-]{0,62}")


@dataclass(frozen=True, slots=True)
class KnowledgeName:
    """A parsed `projects/{project}/knowledge/{document}`."""

    project: str
    document: str


def knowledge_name(field: str, name: str) -> KnowledgeName:
    """Parse a document name, or INVALID_ARGUMENT naming `field`."""
    parts = name.split("/")
    if (
        len(parts) != 4
        or parts[0] != "projects"
        or parts[2] != "knowledge"
        or not _ID.fullmatch(parts[1])
        or not _ID.fullmatch(parts[3])
    ):
        raise invalid(field, "must be a document name like 'projects/{project}/knowledge/{id}'")
    return KnowledgeName(parts[1], parts[3])


def check_document(document: knowledge_pb2.KnowledgeDocument, document_id: str) -> None:
    """INVALID_ARGUMENT naming every field of a new document that breaks a limit."""
    violations: list[FieldViolation] = []
    limits.check_id("document_id", document_id, violations)
    if document.kind == knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED:
        violations.append(FieldViolation("document.kind", "is required"))
    elif document.kind not in knowledge_pb2.KnowledgeKind.values():
        violations.append(FieldViolation("document.kind", "is not a known KnowledgeKind"))
    limits.check_title("document.title", document.title, violations)
    if not document.text.strip():
        violations.append(FieldViolation("document.text", "is required"))
    else:
        limits.check_text("document.text", document.text, TEXT_MAX, violations)
    limits.raise_if(violations)


class KnowledgeRpcs:
    """The knowledge RPCs of ProjectService (mixed into ProjectServicer)."""

    store: ProjectStore
    metrics: CoreMetrics
    knowledge: KnowledgeStore | None

    def _knowledge(self) -> KnowledgeStore:
        if self.knowledge is None:
            raise Unavailable(
                "story knowledge is not set up on this core", reason="KNOWLEDGE_UNAVAILABLE"
            )
        return self.knowledge

    async def forget_project_knowledge(self, project_id: str, *, force: bool) -> None:
        """Before DeleteProject: drop the project's knowledge if the delete will go ahead.

        Done first, so a Chroma outage fails the call with the project intact
        (retry it) instead of leaving knowledge behind for a later project of that id.
        """
        if self.knowledge is None:
            return
        project = await self.store.get_project(project_id, tenant=tenant_in_scope())
        if force or project.episode_count == 0:
            await self.knowledge.delete_project(project_id, tenant=tenant_in_scope())

    async def forget_episode_knowledge(self, project_id: str, number: int) -> None:
        """Before DeleteEpisode: take the episode out of later plans' view."""
        if self.knowledge is not None:
            await self.knowledge.forget_episode(project_id, number, tenant=tenant_in_scope())

    @unary("AddKnowledgeDocument")
    async def AddKnowledgeDocument(
        self, request: project_service_pb2.AddKnowledgeDocumentRequest, context: Context
    ) -> project_service_pb2.AddKnowledgeDocumentResponse:
        project_id = limits.project_id("parent", request.parent)
        if not request.HasField("document"):
            raise invalid("document", "is required")
        check_document(request.document, request.document_id)
        knowledge = self._knowledge()
        await self.store.get_project(project_id, tenant=tenant_in_scope())
        document = knowledge_pb2.KnowledgeDocument(
            kind=request.document.kind, title=request.document.title, text=request.document.text
        )
        document_id = request.document_id or f"d{secrets.token_hex(8)}"
        added = await knowledge.add_document(
            project_id, document_id, document, tenant=tenant_in_scope()
        )
        return project_service_pb2.AddKnowledgeDocumentResponse(document=added)

    @unary("ListKnowledgeDocuments")
    async def ListKnowledgeDocuments(
        self, request: project_service_pb2.ListKnowledgeDocumentsRequest, context: Context
    ) -> project_service_pb2.ListKnowledgeDocumentsResponse:
        project_id = limits.project_id("parent", request.parent)
        size = limits.page_size("page_size", request.page_size)
        if request.kind not in knowledge_pb2.KnowledgeKind.values():
            raise invalid("kind", "is not a known KnowledgeKind")
        listing = f"knowledge:{project_id}:{request.kind}"
        after = pagination.decode("page_token", listing, request.page_token)
        knowledge = self._knowledge()
        await self.store.get_project(project_id, tenant=tenant_in_scope())
        documents, position = await knowledge.list_documents(
            project_id, size, after, request.kind, tenant=tenant_in_scope()
        )
        token = pagination.encode(listing, position) if position is not None else ""
        return project_service_pb2.ListKnowledgeDocumentsResponse(
            documents=documents, next_page_token=token
        )

    @unary("GetKnowledgeDocument")
    async def GetKnowledgeDocument(
        self, request: project_service_pb2.GetKnowledgeDocumentRequest, context: Context
    ) -> project_service_pb2.GetKnowledgeDocumentResponse:
        name = knowledge_name("name", request.name)
        knowledge = self._knowledge()
        await self.store.get_project(name.project, tenant=tenant_in_scope())
        document = await knowledge.get_document(
            name.project, name.document, tenant=tenant_in_scope()
        )
        return project_service_pb2.GetKnowledgeDocumentResponse(document=document)

    @unary("DeleteKnowledgeDocument")
    async def DeleteKnowledgeDocument(
        self, request: project_service_pb2.DeleteKnowledgeDocumentRequest, context: Context
    ) -> project_service_pb2.DeleteKnowledgeDocumentResponse:
        name = knowledge_name("name", request.name)
        knowledge = self._knowledge()
        await self.store.get_project(name.project, tenant=tenant_in_scope())
        await knowledge.delete_document(name.project, name.document, tenant=tenant_in_scope())
        return project_service_pb2.DeleteKnowledgeDocumentResponse()
