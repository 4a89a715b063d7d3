"""ProjectService against a real core: CRUD, pagination, field masks, episodes, errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc import aio
from scriptgen.v1 import project_pb2, project_service_pb2

from tests.server.rpc import connect, error_info, field_violations, rich_status

pb = project_service_pb2


async def test_create_get_update_delete_round_trip(core_target: str) -> None:
    async with connect(core_target) as rpc:
        created = await rpc.create_project(
            "Night Shift",
            type=project_pb2.PROJECT_TYPE_THRILLER,
            logline="A nurse finds a pattern.",
            language="en",
        )
        assert created.name.startswith("projects/")
        assert created.type == project_pb2.PROJECT_TYPE_THRILLER
        assert created.create_time.seconds > 0

        got = (await rpc.projects.GetProject(pb.GetProjectRequest(name=created.name))).project
        assert got == created

        changes = project_pb2.Project(name=created.name, title="Day Shift", logline="ignored")
        updated = (
            await rpc.projects.UpdateProject(
                pb.UpdateProjectRequest(
                    project=changes, update_mask=field_mask_pb2.FieldMask(paths=["title"])
                )
            )
        ).project
        assert updated.title == "Day Shift"
        assert updated.logline == "A nurse finds a pattern."
        assert updated.update_time.ToMicroseconds() >= created.update_time.ToMicroseconds()

        await rpc.projects.DeleteProject(pb.DeleteProjectRequest(name=created.name))
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.projects.GetProject(pb.GetProjectRequest(name=created.name))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).reason == "PROJECT_NOT_FOUND"
    resource = error_details_pb2.ResourceInfo()
    assert any(d.Unpack(resource) for d in rich_status(raised.value).details)
    assert resource.resource_name == created.name


async def test_defaults_and_client_chosen_id(core_target: str) -> None:
    async with connect(core_target) as rpc:
        response = await rpc.projects.CreateProject(
            pb.CreateProjectRequest(project=project_pb2.Project(title="T"), project_id="my-show")
        )
        assert response.project.name == "projects/my-show"
        assert response.project.type == project_pb2.PROJECT_TYPE_DRAMA
        assert response.project.language == "en"
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.projects.CreateProject(
                pb.CreateProjectRequest(
                    project=project_pb2.Project(title="T"), project_id="my-show"
                )
            )
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_pagination_walks_every_project_once_newest_first(core_target: str) -> None:
    async with connect(core_target) as rpc:
        made = [await rpc.create_project(f"Project {i}") for i in range(7)]
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await rpc.projects.ListProjects(
                pb.ListProjectsRequest(page_size=3, page_token=token)
            )
            seen.extend(p.name for p in page.projects)
            pages += 1
            token = page.next_page_token
            if not token:
                break
    assert pages == 3
    assert seen == [p.name for p in reversed(made)]


async def test_episodes_are_listed_got_and_deleted_and_numbers_never_reused(
    core_target: str,
) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        for title in ("One", "Two", "Three"):
            await rpc.generate(project.name, title)
        listing = await rpc.projects.ListEpisodes(
            pb.ListEpisodesRequest(parent=project.name, page_size=2)
        )
        assert [e.number for e in listing.episodes] == [1, 2]
        assert all(e.script == "" for e in listing.episodes)
        rest = await rpc.projects.ListEpisodes(
            pb.ListEpisodesRequest(parent=project.name, page_token=listing.next_page_token)
        )
        assert [e.title for e in rest.episodes] == ["Three"] and not rest.next_page_token

        await rpc.projects.DeleteEpisode(pb.DeleteEpisodeRequest(name=f"{project.name}/episodes/3"))
        events = await rpc.generate(project.name, "Four")
        assert events[-1].completed.episode.number == 4

        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.projects.DeleteProject(pb.DeleteProjectRequest(name=project.name))
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(raised.value).reason == "PROJECT_HAS_EPISODES"
        await rpc.projects.DeleteProject(pb.DeleteProjectRequest(name=project.name, force=True))
        with pytest.raises(aio.AioRpcError) as gone:
            await rpc.projects.GetEpisode(pb.GetEpisodeRequest(name=f"{project.name}/episodes/1"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


BAD_CREATES = [
    (project_pb2.Project(title=""), "", "project.title"),
    (project_pb2.Project(title="   "), "", "project.title"),
    (project_pb2.Project(title="x" * 201), "", "project.title"),
    (project_pb2.Project(title="a\x00b"), "", "project.title"),
    (project_pb2.Project(title="T", logline="x" * 501), "", "project.logline"),
    (project_pb2.Project(title="T", description="x" * 5001), "", "project.description"),
    (project_pb2.Project(title="T", language="english please"), "", "project.language"),
    (project_pb2.Project(title="T", type=99), "", "project.type"),  # type: ignore[arg-type]
    (project_pb2.Project(title="T"), "Bad_Id", "project_id"),
]


@pytest.mark.parametrize(("project", "project_id", "field"), BAD_CREATES)
async def test_bad_projects_name_the_field(
    core_target: str, project: project_pb2.Project, project_id: str, field: str
) -> None:
    async with connect(core_target) as rpc:
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.projects.CreateProject(
                pb.CreateProjectRequest(project=project, project_id=project_id)
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(raised.value)
    assert error_info(raised.value).domain == "scriptgen.dev"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ("missing project", "project"),
        ("bad name", "name"),
        ("negative page", "page_size"),
        ("huge page", "page_size"),
        ("garbage token", "page_token"),
        ("bad episode", "name"),
        ("zero episode", "name"),
        ("empty mask", "update_mask"),
        ("unknown mask path", "update_mask"),
    ],
)
async def test_bad_requests_are_invalid_argument(core_target: str, call: str, field: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "missing project": lambda: rpc.projects.CreateProject(pb.CreateProjectRequest()),
            "bad name": lambda: rpc.projects.GetProject(
                pb.GetProjectRequest(name="projects/UPPER")
            ),
            "negative page": lambda: rpc.projects.ListProjects(
                pb.ListProjectsRequest(page_size=-1)
            ),
            "huge page": lambda: rpc.projects.ListProjects(pb.ListProjectsRequest(page_size=1001)),
            "garbage token": lambda: rpc.projects.ListProjects(
                pb.ListProjectsRequest(page_token="not-a-token")
            ),
            "bad episode": lambda: rpc.projects.GetEpisode(
                pb.GetEpisodeRequest(name=f"{project.name}/episodes/one")
            ),
            "zero episode": lambda: rpc.projects.GetEpisode(
                pb.GetEpisodeRequest(name=f"{project.name}/episodes/0")
            ),
            "empty mask": lambda: rpc.projects.UpdateProject(
                pb.UpdateProjectRequest(project=project)
            ),
            "unknown mask path": lambda: rpc.projects.UpdateProject(
                pb.UpdateProjectRequest(
                    project=project, update_mask=field_mask_pb2.FieldMask(paths=["create_time"])
                )
            ),
        }
        with pytest.raises(aio.AioRpcError) as raised:
            await calls[call]()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(raised.value)


async def test_a_page_token_of_another_list_is_refused(core_target: str) -> None:
    async with connect(core_target) as rpc:
        first = await rpc.create_project()
        second = await rpc.create_project()
        for project in (first, second):
            for _ in range(2):
                await rpc.generate(project.name)
        page = await rpc.projects.ListEpisodes(
            pb.ListEpisodesRequest(parent=first.name, page_size=1)
        )
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.projects.ListEpisodes(
                pb.ListEpisodesRequest(parent=second.name, page_token=page.next_page_token)
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(raised.value)
