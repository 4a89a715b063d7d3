"""Project ids are per tenant: Alice and Bob each have a project `pilot`, and each sees only theirs.

Both create `projects/pilot` (Bob after Alice: no ALREADY_EXISTS, nothing
learned about Alice), add a knowledge document `bible` to it, and run
generations. Every read through the core and the gateway — project,
episodes, exports, knowledge, jobs — answers the caller's own, under the one
name. The plan prompts show the knowledge each job retrieved: the tenant's
own story bible and earlier episodes, never the other's.
"""

from __future__ import annotations

import httpx
import pytest
from google.protobuf import field_mask_pb2
from grpc import aio
from scriptgen.v1 import (
    generation_service_pb2,
    generation_service_pb2_grpc,
    knowledge_pb2,
    project_pb2,
    project_service_pb2,
    project_service_pb2_grpc,
)

from server import Core
from tests.security.conftest import bearer
from tests.server.rpc import error_info

PS = project_service_pb2
GS = generation_service_pb2


class _Tenant:
    """One tenant's calls with its key."""

    def __init__(self, channel: aio.Channel, key: str) -> None:
        self.key = key
        self.projects = project_service_pb2_grpc.ProjectServiceStub(channel)
        self.generations = generation_service_pb2_grpc.GenerationServiceStub(channel)

    async def create_pilot(self, title: str) -> project_pb2.Project:
        reply = await self.projects.CreateProject(
            PS.CreateProjectRequest(project_id="pilot", project=project_pb2.Project(title=title)),
            metadata=bearer(self.key),
        )
        return reply.project

    async def add_bible(self, text: str) -> knowledge_pb2.KnowledgeDocument:
        reply = await self.projects.AddKnowledgeDocument(
            PS.AddKnowledgeDocumentRequest(
                parent="projects/pilot",
                document_id="bible",
                document=knowledge_pb2.KnowledgeDocument(
                    kind=knowledge_pb2.KNOWLEDGE_KIND_STORY_BIBLE, title="Bible", text=text
                ),
            ),
            metadata=bearer(self.key),
        )
        return reply.document

    async def generate(self, title: str) -> project_pb2.Episode:
        events = [
            r.event
            async for r in self.generations.GenerateScript(
                GS.GenerateScriptRequest(parent="projects/pilot", title=title),
                metadata=bearer(self.key),
            )
        ]
        assert events[-1].HasField("completed"), events[-1]
        reply = await self.projects.GetEpisode(
            PS.GetEpisodeRequest(name=events[-1].completed.episode.name),
            metadata=bearer(self.key),
        )
        return reply.episode


def _plan_prompt(episode: project_pb2.Episode) -> str:
    return next(p.user for p in episode.prompt_snapshot.prompts if p.stage == "plan")


async def test_two_tenants_each_have_their_own_pilot(
    secure_core: Core,
    channel: aio.Channel,
    alice_key: str,
    bob_key: str,
    http: httpx.AsyncClient,
) -> None:
    alice, bob = _Tenant(channel, alice_key), _Tenant(channel, bob_key)
    assert (await alice.create_pilot("Alice's pilot")).name == "projects/pilot"
    # Bob takes the same id after Alice: it is his own project, not ALREADY_EXISTS.
    assert (await bob.create_pilot("Bob's pilot")).name == "projects/pilot"
    with pytest.raises(aio.AioRpcError) as again:
        await alice.create_pilot("Again")
    assert error_info(again.value).reason == "PROJECT_EXISTS"

    await alice.add_bible("Mina guards the Gadeok lighthouse; the lamp hides a radio.")
    await bob.add_bible("Jun drives the last night bus through Busan; the bus has no brakes.")
    alice_first = await alice.generate("Lighthouse")
    bob_first = await bob.generate("Last bus")
    bob_second = await bob.generate("No brakes")
    assert [e.name for e in (alice_first, bob_first, bob_second)] == [
        "projects/pilot/episodes/1",
        "projects/pilot/episodes/1",
        "projects/pilot/episodes/2",
    ]

    # What each job's plan stage retrieved: its own tenant's knowledge and episodes only.
    alice_plan = _plan_prompt(alice_first)
    assert "Gadeok" in alice_plan and "Busan" not in alice_plan
    bob_plan = _plan_prompt(bob_second)
    assert "Busan" in bob_plan and "Last bus" in bob_plan
    assert "Gadeok" not in bob_plan and "Lighthouse" not in bob_plan

    for tenant, title, episodes, bible in (
        (alice, "Alice's pilot", ["Lighthouse"], "Gadeok"),
        (bob, "Bob's pilot", ["Last bus", "No brakes"], "Busan"),
    ):
        auth = bearer(tenant.key)
        project = (
            await tenant.projects.GetProject(
                PS.GetProjectRequest(name="projects/pilot"), metadata=auth
            )
        ).project
        assert (project.title, project.episode_count) == (title, len(episodes))
        listed = await tenant.projects.ListProjects(PS.ListProjectsRequest(), metadata=auth)
        assert [p.title for p in listed.projects] == [title]
        listed_episodes = await tenant.projects.ListEpisodes(
            PS.ListEpisodesRequest(parent="projects/pilot"), metadata=auth
        )
        assert [e.title for e in listed_episodes.episodes] == episodes
        document = await tenant.projects.GetKnowledgeDocument(
            PS.GetKnowledgeDocumentRequest(name="projects/pilot/knowledge/bible"), metadata=auth
        )
        assert bible in document.document.text
        jobs = await tenant.generations.ListGenerations(
            GS.ListGenerationsRequest(parent="projects/pilot"), metadata=auth
        )
        assert sorted(j.title for j in jobs.generations) == sorted(episodes)
        exported = await tenant.projects.ExportEpisode(
            PS.ExportEpisodeRequest(
                name="projects/pilot/episodes/1", format=PS.EXPORT_FORMAT_FOUNTAIN
            ),
            metadata=auth,
        )
        assert f"Title: {episodes[0]}" in exported.content.decode()

        # The same reads through the gateway.
        headers = {"authorization": f"Bearer {tenant.key}"}
        page = await http.get("/v1/projects/pilot", headers=headers)
        assert page.status_code == 200 and page.json()["title"] == title
        listing = await http.get("/v1/projects/pilot/episodes", headers=headers)
        assert [e["title"] for e in listing.json()["episodes"]] == episodes
        knowledge = await http.get("/v1/projects/pilot/knowledge/bible", headers=headers)
        assert bible in knowledge.json()["text"]

    # Changing and deleting one tenant's pilot leaves the other's as it was.
    await bob.projects.UpdateProject(
        PS.UpdateProjectRequest(
            project=project_pb2.Project(name="projects/pilot", title="Bob's, retitled"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        ),
        metadata=bearer(bob_key),
    )
    await alice.projects.DeleteProject(
        PS.DeleteProjectRequest(name="projects/pilot", force=True), metadata=bearer(alice_key)
    )
    left = await bob.projects.GetProject(
        PS.GetProjectRequest(name="projects/pilot"), metadata=bearer(bob_key)
    )
    assert (left.project.title, left.project.episode_count) == ("Bob's, retitled", 2)
    still = await bob.projects.GetKnowledgeDocument(
        PS.GetKnowledgeDocumentRequest(name="projects/pilot/knowledge/bible"),
        metadata=bearer(bob_key),
    )
    assert "Busan" in still.document.text
    # Alice may take the id again: a fresh project, with none of Bob's.
    fresh = await alice.create_pilot("Alice's second pilot")
    assert fresh.episode_count == 0
    empty = await alice.projects.ListKnowledgeDocuments(
        PS.ListKnowledgeDocumentsRequest(parent="projects/pilot"), metadata=bearer(alice_key)
    )
    assert list(empty.documents) == []
