"""Test-side story data: fill a running core, and read back everything it holds."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from redis.asyncio import Redis
from scriptgen.v1 import generation_service_pb2, knowledge_pb2, project_service_pb2

from tests.server.rpc import connect

_KNOWLEDGE = (
    (knowledge_pb2.KNOWLEDGE_KIND_CHARACTER_PROFILE, "Mina", "Mina is a night nurse who hums."),
    (knowledge_pb2.KNOWLEDGE_KIND_WORLD_BUILDING, "The ward", "Ward 9 smells of rain and coffee."),
)


async def populate(target: str, projects: int = 2, tag: str = "") -> list[str]:
    """Projects, each with story knowledge and one generated episode; their names."""
    names: list[str] = []
    async with connect(target) as stubs:
        for number in range(projects):
            project = await stubs.create_project(f"Night Shift {tag}{number}", language="en")
            for kind, title, text in _KNOWLEDGE:
                await stubs.projects.AddKnowledgeDocument(
                    project_service_pb2.AddKnowledgeDocumentRequest(
                        parent=project.name,
                        document=knowledge_pb2.KnowledgeDocument(kind=kind, title=title, text=text),
                    )
                )
            events = await stubs.generate(
                project.name, title=f"Pilot {tag}{number}", request_id=f"pilot-{tag}{number}"
            )
            assert events[-1].WhichOneof("kind") == "completed", events[-1]
            names.append(project.name)
    return names


async def holdings(target: str) -> dict[str, Any]:
    """Every project with its episodes (scripts included) and knowledge, as JSON."""
    view: dict[str, Any] = {}
    async with connect(target) as stubs:
        listed = await stubs.projects.ListProjects(
            project_service_pb2.ListProjectsRequest(page_size=1000)
        )
        for project in listed.projects:
            episodes = await stubs.projects.ListEpisodes(
                project_service_pb2.ListEpisodesRequest(parent=project.name, page_size=1000)
            )
            full = [
                (
                    await stubs.projects.GetEpisode(
                        project_service_pb2.GetEpisodeRequest(name=episode.name)
                    )
                ).episode
                for episode in episodes.episodes
            ]
            documents = await stubs.projects.ListKnowledgeDocuments(
                project_service_pb2.ListKnowledgeDocumentsRequest(
                    parent=project.name, page_size=1000
                )
            )
            view[project.name] = {
                "project": json_format.MessageToDict(project),
                "episodes": [json_format.MessageToDict(e) for e in full],
                "knowledge": sorted(
                    (json_format.MessageToDict(d) for d in documents.documents),
                    key=lambda d: str(d["name"]),
                ),
            }
    return view


async def jobs(target: str) -> dict[str, Any]:
    """Every generation job with its full event log (replayed), as JSON."""
    view: dict[str, Any] = {}
    async with connect(target) as stubs:
        listed = await stubs.generations.ListGenerations(
            generation_service_pb2.ListGenerationsRequest(page_size=1000)
        )
        for job in listed.generations:
            view[job.name] = {
                "job": json_format.MessageToDict(job),
                "events": [json_format.MessageToDict(e) for e in await stubs.follow(job.name)],
            }
    return view


async def redis_view(url: str, prefix: str) -> dict[str, Any]:
    """Every key under `prefix`: its type, its value read by type, and whether it expires."""
    client = Redis.from_url(url)  # values stay bytes: job records are protobuf
    view: dict[str, Any] = {}
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=500):
            assert isinstance(key, bytes)
            found = await client.type(key)
            kind = found.decode() if isinstance(found, bytes) else str(found)
            value: Any
            if kind == "string":
                value = await client.get(key)
            elif kind == "hash":
                value = await client.hgetall(key)
            elif kind == "list":
                value = await client.lrange(key, 0, -1)
            elif kind == "set":
                value = sorted(await client.smembers(key))
            elif kind == "zset":
                value = await client.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = await client.xrange(key)
            else:
                value = kind
            view[key.decode("utf-8", "backslashreplace")] = {
                "type": kind,
                "value": value,
                "expires": await client.ttl(key) >= 0,
            }
    finally:
        await client.aclose()
    return view
