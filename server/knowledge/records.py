"""How documents and episodes are laid out as Chroma records: ids, metadata, summaries.

Every chunk is one record, with metadata

| key        | value                                                            |
|------------|------------------------------------------------------------------|
| tenant     | the tenant owning the project                                    |
| project    | the project id (unique per tenant)                               |
| space      | `tenants/{t}/projects/{p}#{role}`: what retrieval filters on     |
| origin     | `knowledge` or `episode`                                         |
| source     | `projects/{p}/knowledge/{d}` or `projects/{p}/episodes/{n}`      |
| role       | `text` (a slice of the document) or `summary` (an episode's)     |
| kind       | a KnowledgeKind name, or `EPISODE`                               |
| title      | the document's title, or `Episode {n}: {title}`                  |
| chunk      | the chunk's place, 0-based; `chunks` how many the source has     |
| characters | length of the whole text; `created` its create time (µs)         |
| episode    | the episode number (episodes only)                               |

The text chunks of a document are exact slices of it, so joining them in
`chunk` order gives the document back; chunk 0 doubles as the catalog entry.
An episode also gets one `summary` record — title, outline, cast and how it
ends — which retrieval keeps in view for the next episodes.

Project ids are unique per tenant only, so a record's id starts with its
tenant: `tenants/{t}/projects/{p}/knowledge/{d}#{chunk}` (or `…/episodes/{n}#…`).
Records written before tenants had a `tenant` key (schema 1: ids without the
`tenants/{t}/` prefix) are given one when their collection is first opened
(`adopt_legacy`): the tenant of the project they were written for.

`space` is tenant, project and role in one value. Every project's records share
the collection, and Chroma weighs each clause of a filter against all of them:
`tenant` and `role` match nearly every record, so a filter on (tenant,
project, role) cost in proportion to the whole collection, while one clause on
`space` matches only the project's records (BENCHMARKS.md, session 21). Records
written before it (schemas 1 and 2) are given it when their collection is first
opened (`adopt_legacy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from google.protobuf import timestamp_pb2
from scriptgen.v1 import knowledge_pb2, project_pb2

from server.knowledge.chroma import Metadata, MetadataValue
from server.knowledge.text import head, tail

KNOWLEDGE: Final = "knowledge"
EPISODE: Final = "episode"
TEXT: Final = "text"
SUMMARY: Final = "summary"
#: Every role a record has.
ROLES: Final = (TEXT, SUMMARY)
#: Most estimated tokens of an episode summary's outline and ending.
SUMMARY_OUTLINE_TOKENS: Final = 160
SUMMARY_ENDING_TOKENS: Final = 80


def document_source(project_id: str, document_id: str) -> str:
    return f"projects/{project_id}/knowledge/{document_id}"


def episode_source(project_id: str, number: int) -> str:
    return f"projects/{project_id}/episodes/{number}"


def record_id(tenant: str, source: str, part: str | int) -> str:
    """The Chroma id of one record of `source` (a chunk number or `summary`)."""
    return f"tenants/{tenant}/{source}#{part}"


def space(tenant: str, project_id: str, role: str) -> str:
    """The `space` of a project's records of one role (tenants and project ids hold no `/`
    or `#`)."""
    return f"tenants/{tenant}/projects/{project_id}#{role}"


def episode_title(episode: project_pb2.Episode) -> str:
    return f"Episode {episode.number}: {episode.title}".rstrip(": ")


def chunk_metadata(
    *,
    tenant: str,
    project_id: str,
    origin: str,
    source: str,
    kind: str,
    title: str,
    chunk: int,
    chunks: int,
    characters: int,
    created: int,
    role: str = TEXT,
    episode: int | None = None,
) -> Metadata:
    metadata: dict[str, MetadataValue] = {
        "tenant": tenant,
        "project": project_id,
        "space": space(tenant, project_id, role),
        "origin": origin,
        "source": source,
        "role": role,
        "kind": kind,
        "title": title,
        "chunk": chunk,
        "chunks": chunks,
        "characters": characters,
        "created": created,
    }
    if episode is not None:
        metadata["episode"] = episode
    return metadata


def episode_summary(episode: project_pb2.Episode) -> str:
    """What the next episodes need to know of this one, in a few hundred tokens."""
    lines = [episode_title(episode)]
    if episode.outline.strip():
        lines.append("Outline: " + head(episode.outline.strip(), SUMMARY_OUTLINE_TOKENS))
    if episode.cast:
        lines.append("Cast: " + ", ".join(episode.cast))
    if episode.script.strip():
        lines.append("Ending: " + tail(episode.script.strip(), SUMMARY_ENDING_TOKENS))
    return "\n".join(lines)


def document_from(
    metadata: Mapping[str, MetadataValue], text: str = ""
) -> knowledge_pb2.KnowledgeDocument:
    """A KnowledgeDocument from its chunk-0 metadata (and its text, when given)."""
    created = timestamp_pb2.Timestamp()
    created.FromMicroseconds(int(metadata.get("created", 0)))
    kind_name = str(metadata.get("kind", ""))
    kind = (
        knowledge_pb2.KnowledgeKind.Value(kind_name)
        if kind_name in knowledge_pb2.KnowledgeKind.keys()  # noqa: SIM118 - an enum wrapper
        else knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED
    )
    return knowledge_pb2.KnowledgeDocument(
        name=str(metadata.get("source", "")),
        kind=kind,
        title=str(metadata.get("title", "")),
        text=text,
        create_time=created,
        character_count=int(metadata.get("characters", 0)),
        chunk_count=int(metadata.get("chunks", 0)),
    )
