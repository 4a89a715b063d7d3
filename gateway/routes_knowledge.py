"""HTTP routes of a project's story knowledge: add, list, get and delete documents."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from scriptgen.v1 import knowledge_pb2, project_service_pb2

from gateway import state
from gateway.codec import json_response, parse_message
from gateway.errors import ApiError, Reason
from gateway.inputs import Query, json_object, parse_integer, path_id

routes = web.RouteTableDef()

#: Adding a document embeds all of it (with OpenAI: many API calls), so it may
#: take longer than other unary calls.
ADD_DEADLINE_SECONDS: Final = 60.0
_KIND_PREFIX: Final = "KNOWLEDGE_KIND_"


def _project_name(request: web.Request) -> str:
    return f"projects/{path_id(request, 'project')}"


def _document_name(request: web.Request) -> str:
    return f"{_project_name(request)}/knowledge/{path_id(request, 'document')}"


def _kind(raw: str | None) -> knowledge_pb2.KnowledgeKind.ValueType:
    """`kind=`: an enum name, its short form (`character-profile`) or its number."""
    if raw is None or raw == "":
        return knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED
    number = parse_integer(raw)
    if number is not None and number in knowledge_pb2.KnowledgeKind.values():
        return knowledge_pb2.KnowledgeKind.ValueType(number)
    name = raw.upper().replace("-", "_")
    for candidate in (name, _KIND_PREFIX + name):
        if candidate in knowledge_pb2.KnowledgeKind.keys():  # noqa: SIM118 - an enum wrapper
            return knowledge_pb2.KnowledgeKind.Value(candidate)
    raise ApiError.invalid(
        Reason.INVALID_QUERY_PARAMETER,
        f"Unknown knowledge kind {raw!r}.",
        {"kind": "Must be a KnowledgeKind such as KNOWLEDGE_KIND_CHARACTER_PROFILE."},
    )


@routes.post("/v1/projects/{project}/knowledge")
async def add_knowledge_document(request: web.Request) -> web.StreamResponse:
    parent = _project_name(request)
    query = Query(request)
    document_id = query.text("documentId") or ""
    query.finish()
    body = await json_object(request, request.app[state.CONFIG].max_body_bytes)
    document = parse_message(body, knowledge_pb2.KnowledgeDocument(), path="document")
    reply = await request.app[state.CORE].projects.AddKnowledgeDocument(
        project_service_pb2.AddKnowledgeDocumentRequest(
            parent=parent, document=document, document_id=document_id
        ),
        metadata=state.call_metadata(request),
        timeout=max(state.unary_deadline(request), ADD_DEADLINE_SECONDS),
    )
    location = f"/v1/{reply.document.name}"
    return json_response(reply.document, status=201, headers={"Location": location})


@routes.get("/v1/projects/{project}/knowledge")
async def list_knowledge_documents(request: web.Request) -> web.StreamResponse:
    parent = _project_name(request)
    query = Query(request)
    page_size = query.integer("pageSize") or 0
    page_token = query.text("pageToken") or ""
    raw_kind = query.text("kind")
    query.finish()
    reply = await request.app[state.CORE].projects.ListKnowledgeDocuments(
        project_service_pb2.ListKnowledgeDocumentsRequest(
            parent=parent, page_size=page_size, page_token=page_token, kind=_kind(raw_kind)
        ),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply)


@routes.get("/v1/projects/{project}/knowledge/{document}")
async def get_knowledge_document(request: web.Request) -> web.StreamResponse:
    name = _document_name(request)
    Query(request).finish()
    reply = await request.app[state.CORE].projects.GetKnowledgeDocument(
        project_service_pb2.GetKnowledgeDocumentRequest(name=name),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply.document)


@routes.delete("/v1/projects/{project}/knowledge/{document}")
async def delete_knowledge_document(request: web.Request) -> web.StreamResponse:
    name = _document_name(request)
    Query(request).finish()
    reply = await request.app[state.CORE].projects.DeleteKnowledgeDocument(
        project_service_pb2.DeleteKnowledgeDocumentRequest(name=name),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply)
