"""The OpenAPI 3.1 document of every gateway route.

Component schemas are derived from the protobuf descriptors, following the
proto3 JSON mapping (camelCase names, int64 as strings, enums by name,
Timestamps as RFC 3339 strings), so they cannot drift from the protos.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, Final

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from scriptgen.v1 import (
    generation_pb2,
    generation_service_pb2,
    knowledge_pb2,
    project_pb2,
    project_service_pb2,
)

from gateway.sse import EVENT_NAMES

Schema = dict[str, Any]

_OWN_PACKAGE: Final = "scriptgen.v1."
_INT64: Final[Schema] = {"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64: Final[Schema] = {"type": ["string", "integer"], "format": "uint64", "pattern": "^[0-9]+$"}
_SCALARS: Final[Mapping[int, Schema]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
# Well-known types with a JSON form of their own.
_WELL_KNOWN: Final[Mapping[str, Schema]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated paths."},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}


def component_name(full_name: str) -> str:
    """`scriptgen.v1.GenerationEvent.Queued` → `GenerationEvent.Queued`."""
    return full_name.removeprefix(_OWN_PACKAGE)


def ref(full_name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{component_name(full_name)}"}


class SchemaSet:
    """Component schemas for messages and enums, each added once with what it uses."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def message(self, descriptor: Descriptor) -> Schema:
        known = _WELL_KNOWN.get(descriptor.full_name)
        if known is not None:
            # Inline: a Timestamp is just a date-time string to a JSON client.
            return dict(known)
        name = component_name(descriptor.full_name)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: messages may refer to themselves
            self.schemas[name] = self._message_schema(descriptor)
        return ref(descriptor.full_name)

    def enum(self, descriptor: EnumDescriptor) -> Schema:
        name = component_name(descriptor.full_name)
        if name not in self.schemas:
            self.schemas[name] = {
                "type": "string",
                "enum": [value.name for value in descriptor.values],
                "description": f"Enum {descriptor.full_name}; numbers are accepted as input.",
            }
        return ref(descriptor.full_name)

    def _message_schema(self, descriptor: Descriptor) -> Schema:
        schema: Schema = {
            "type": "object",
            "description": f"Message {descriptor.full_name} (proto3 JSON).",
            "properties": {field.json_name: self._field(field) for field in descriptor.fields},
            "additionalProperties": False,
        }
        oneofs = [oneof for oneof in descriptor.oneofs if not oneof.name.startswith("_")]
        for oneof in oneofs:
            members = ", ".join(field.json_name for field in oneof.fields)
            schema["description"] += f" At most one of: {members}."
        return schema

    def _field(self, field: FieldDescriptor) -> Schema:
        nested = field.message_type
        if field.type == FieldDescriptor.TYPE_MESSAGE and nested and nested.GetOptions().map_entry:
            value = nested.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        if field.is_repeated:
            return {"type": "array", "items": self._single(field)}
        return self._single(field)

    def _single(self, field: FieldDescriptor) -> Schema:
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            return self.message(field.message_type)
        if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: Schema, status: str = "200") -> dict[str, Any]:
    return {
        status: {"description": description, "content": _json(schema)},
        "default": {"$ref": "#/components/responses/Error"},
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$"},
    }


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{description} Also accepted in snake_case.",
        "schema": schema,
    }


_PROJECT = _path("project", "The project id, as in `projects/{project}`.")
_EPISODE = _path("episode", "The episode id (its number).")
_DOCUMENT = _path("document", "The knowledge document id, as in `…/knowledge/{document}`.")
_GENERATION = _path("generation", "The job id, as in `generations/{generation}`.")
_PAGE = [
    _query("pageSize", {"type": "integer", "format": "int32"}, "Page size (0 = 50, up to 1000)."),
    _query("pageToken", {"type": "string"}, "`nextPageToken` of the previous page."),
]
_EVENT_STREAM_DESCRIPTION = (
    "Server-Sent Events. `retry: <ms>` first; each event `id: <sequence>`, "
    f"`event: <{'|'.join(sorted(set(EVENT_NAMES.values())))}>`, `data: <GenerationEvent JSON>`; "
    "heartbeats as `id: <sequence>` with a `: ping` comment; `: ping` while idle. "
    "The stream ends after the terminal event (completed, failed or cancelled)."
)


def _event_stream(schemas: SchemaSet) -> dict[str, Any]:
    return {
        "200": {
            "description": _EVENT_STREAM_DESCRIPTION,
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "x-event-data": schemas.message(generation_pb2.GenerationEvent.DESCRIPTOR),
                }
            },
        },
        "204": {"description": "Nothing after `Last-Event-ID`: the job has ended."},
        "default": {"$ref": "#/components/responses/Error"},
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI document as a JSON-ready dict."""
    schemas = SchemaSet()
    project = schemas.message(project_pb2.Project.DESCRIPTOR)
    episode = schemas.message(project_pb2.Episode.DESCRIPTOR)
    generation = schemas.message(generation_pb2.Generation.DESCRIPTOR)
    empty = schemas.message(empty_pb2.Empty.DESCRIPTOR)
    schemas.message(generation_service_pb2.GenerateScriptRequest.DESCRIPTOR)
    body_schema = dict(schemas.schemas["GenerateScriptRequest"])
    body_schema["properties"] = {
        key: value for key, value in body_schema["properties"].items() if key != "parent"
    }
    body_schema["description"] = "GenerateScriptRequest without `parent`, which the path names."
    schemas.schemas["GenerateScriptBody"] = body_schema
    schemas.schemas["CreatedGeneration"] = {
        "type": "object",
        "properties": {"generation": generation, "eventsUrl": {"type": "string"}},
        "required": ["generation", "eventsUrl"],
    }
    schemas.schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "status", "message", "details"],
                "properties": {
                    "code": {"type": "integer", "description": "The HTTP status."},
                    "status": {"type": "string", "description": "The gRPC status code name."},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": schemas.message(any_pb2.Any.DESCRIPTOR),
                    },
                },
            }
        },
    }
    list_projects = schemas.message(project_service_pb2.ListProjectsResponse.DESCRIPTOR)
    list_episodes = schemas.message(project_service_pb2.ListEpisodesResponse.DESCRIPTOR)
    document = schemas.message(knowledge_pb2.KnowledgeDocument.DESCRIPTOR)
    list_documents = schemas.message(project_service_pb2.ListKnowledgeDocumentsResponse.DESCRIPTOR)
    list_generations = schemas.message(generation_service_pb2.ListGenerationsResponse.DESCRIPTOR)
    schemas.message(generation_pb2.GenerationEvent.DESCRIPTOR)
    created = {"$ref": "#/components/schemas/CreatedGeneration"}
    location = {
        "Location": {"description": "URL of the new resource.", "schema": {"type": "string"}}
    }

    def with_headers(responses: dict[str, Any], status: str) -> dict[str, Any]:
        responses[status]["headers"] = location
        return responses

    paths: dict[str, Any] = {
        "/v1/projects": {
            "post": {
                "operationId": "createProject",
                "summary": "Create a project.",
                "parameters": [
                    _query("projectId", {"type": "string"}, "Client-chosen id ([a-z][a-z0-9-]*).")
                ],
                "requestBody": {"required": True, "content": _json(project)},
                "responses": with_headers(_ok("The created project.", project, "201"), "201"),
            },
            "get": {
                "operationId": "listProjects",
                "summary": "List projects, newest first.",
                "parameters": _PAGE,
                "responses": _ok("A page of projects.", list_projects),
            },
        },
        "/v1/projects/{project}": {
            "parameters": [_PROJECT],
            "get": {
                "operationId": "getProject",
                "summary": "Get a project.",
                "responses": _ok("The project.", project),
            },
            "patch": {
                "operationId": "updateProject",
                "summary": "Update a project's fields.",
                "parameters": [
                    _query(
                        "updateMask",
                        {"type": "string"},
                        "Comma-separated fields to change; default: the fields in the body.",
                    )
                ],
                "requestBody": {"required": True, "content": _json(project)},
                "responses": _ok("The updated project.", project),
            },
            "delete": {
                "operationId": "deleteProject",
                "summary": "Delete a project; with force=true also its episodes.",
                "parameters": [_query("force", {"type": "boolean"}, "Also delete episodes.")],
                "responses": _ok("Deleted.", empty),
            },
        },
        "/v1/projects/{project}/episodes": {
            "parameters": [_PROJECT],
            "get": {
                "operationId": "listEpisodes",
                "summary": "List a project's episodes by number.",
                "parameters": _PAGE,
                "responses": _ok("A page of episodes, without scripts.", list_episodes),
            },
        },
        "/v1/projects/{project}/episodes/{episode}": {
            "parameters": [_PROJECT, _EPISODE],
            "get": {
                "operationId": "getEpisode",
                "summary": "Get an episode with its script.",
                "responses": _ok("The episode.", episode),
            },
            "delete": {
                "operationId": "deleteEpisode",
                "summary": "Delete an episode.",
                "responses": _ok("Deleted.", empty),
            },
        },
        "/v1/projects/{project}/episodes/{episode}:export": {
            "parameters": [_PROJECT, _EPISODE],
            "get": {
                "operationId": "exportEpisode",
                "summary": "Download an episode as Fountain, Final Draft (FDX), HTML or PDF.",
                "description": "Answers the file itself with its media type and a "
                "`Content-Disposition: attachment; filename=…` header. The PDF embeds its "
                "fonts (a Hangul-capable one for Korean scripts).",
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "required": True,
                        "description": "The file format.",
                        "schema": {"type": "string", "enum": ["fountain", "fdx", "html", "pdf"]},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The exported file.",
                        "headers": {
                            "Content-Disposition": {
                                "description": '`attachment; filename="{project}-e01-….ext"`.',
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {
                            "text/plain; charset=utf-8": {"schema": {"type": "string"}},
                            "application/xml": {"schema": {"type": "string"}},
                            "text/html; charset=utf-8": {"schema": {"type": "string"}},
                            "application/pdf": {
                                "schema": {"type": "string", "contentMediaType": "application/pdf"}
                            },
                        },
                    },
                    "default": {"$ref": "#/components/responses/Error"},
                },
            },
        },
        "/v1/projects/{project}/knowledge": {
            "parameters": [_PROJECT],
            "post": {
                "operationId": "addKnowledgeDocument",
                "summary": "Add a story-knowledge document (kind, title, text) to a project.",
                "description": "Limits: kind required; title 1-200 characters; text 1-200000"
                " characters; at most SCRIPTGEN_KNOWLEDGE_MAX_DOCUMENTS (100) per project.",
                "parameters": [
                    _query("documentId", {"type": "string"}, "Client-chosen id ([a-z][a-z0-9-]*).")
                ],
                "requestBody": {"required": True, "content": _json(document)},
                "responses": with_headers(_ok("The stored document.", document, "201"), "201"),
            },
            "get": {
                "operationId": "listKnowledgeDocuments",
                "summary": "List a project's knowledge documents, oldest first, without text.",
                "parameters": [
                    *_PAGE,
                    _query(
                        "kind",
                        {"type": "string"},
                        "Only this KnowledgeKind (name, short name such as"
                        " `character-profile`, or number).",
                    ),
                ],
                "responses": _ok("A page of documents.", list_documents),
            },
        },
        "/v1/projects/{project}/knowledge/{document}": {
            "parameters": [_PROJECT, _DOCUMENT],
            "get": {
                "operationId": "getKnowledgeDocument",
                "summary": "Get a knowledge document with its text.",
                "responses": _ok("The document.", document),
            },
            "delete": {
                "operationId": "deleteKnowledgeDocument",
                "summary": "Delete a knowledge document.",
                "responses": _ok("Deleted.", empty),
            },
        },
        "/v1/projects/{project}/generations": {
            "parameters": [_PROJECT],
            "post": {
                "operationId": "generateScript",
                "summary": "Start writing an episode.",
                "description": "With `Accept: text/event-stream` the answer is the job's "
                "event stream; otherwise 201 with the job and its `eventsUrl`.",
                "requestBody": {
                    "required": True,
                    "content": _json({"$ref": "#/components/schemas/GenerateScriptBody"}),
                },
                "responses": {
                    **with_headers(_ok("The job was accepted.", created, "201"), "201"),
                    **{k: v for k, v in _event_stream(schemas).items() if k == "200"},
                },
            },
            "get": {
                "operationId": "listGenerations",
                "summary": "List the project's jobs, newest first.",
                "parameters": _PAGE,
                "responses": _ok("A page of jobs.", list_generations),
            },
        },
        "/v1/generations/{generation}": {
            "parameters": [_GENERATION],
            "get": {
                "operationId": "getGeneration",
                "summary": "Get a job.",
                "responses": _ok("The job.", generation),
            },
        },
        "/v1/generations/{generation}:cancel": {
            "parameters": [_GENERATION],
            "post": {
                "operationId": "cancelGeneration",
                "summary": "Cancel a job; cancelling an ended job returns it unchanged.",
                "requestBody": {"required": False, "content": _json(empty)},
                "responses": _ok("The job after cancellation.", generation),
            },
        },
        "/v1/generations/{generation}/events": {
            "parameters": [_GENERATION],
            "get": {
                "operationId": "streamGenerationEvents",
                "summary": "Follow a job's events: replay, then live.",
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "Resume after this sequence.",
                        "schema": {"type": "string", "pattern": "^[0-9]*$"},
                    },
                    _query(
                        "lastEventId",
                        {"type": "string", "pattern": "^[0-9]*$"},
                        "Resume after this sequence, for clients that cannot set headers.",
                    ),
                ],
                "responses": _event_stream(schemas),
            },
        },
        "/healthz": _plain_get("healthz", "The process is alive.", "application/json"),
        "/readyz": _plain_get(
            "readyz", "200 while the core is SERVING, else 503.", "application/json"
        ),
        "/metrics": _plain_get("metrics", "Prometheus metrics.", "text/plain"),
        "/openapi.json": _plain_get("openapi", "This document.", "application/json"),
        "/": _plain_get("webPage", "The web page.", "text/html"),
        "/app.js": _plain_get("webPageScript", "The web page's script.", "text/javascript"),
        "/app.css": _plain_get("webPageStyles", "The web page's stylesheet.", "text/css"),
        "/modules/{module}": {
            "parameters": [_path("module", "A JavaScript module of the web page, e.g. `api.js`.")],
            **_plain_get(
                "webPageModule", "A JavaScript module of the web page.", "text/javascript"
            ),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Scriptgen gateway",
            "version": "v1",
            "description": "JSON and Server-Sent Events over the Scriptgen gRPC core.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.schemas.items())),
            "responses": {
                "Error": {
                    "description": "A Google-style error.",
                    "content": _json({"$ref": "#/components/schemas/Error"}),
                }
            },
        },
    }


def _plain_get(operation_id: str, description: str, content_type: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": description,
            "responses": {
                "200": {"description": description, "content": {content_type: {}}},
                "default": {"$ref": "#/components/responses/Error"},
            },
        }
    }


@functools.cache
def openapi_document() -> bytes:
    """The document, serialized once per process: it depends on nothing but the protos."""
    return json.dumps(build_document(), separators=(",", ":")).encode()
