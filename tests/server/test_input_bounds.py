"""Inputs a client crafts against the core's parsers — page tokens it made itself, episode
numbers of thousands of digits — are INVALID_ARGUMENT naming the field, on every store.

The page-token tag is no secret (server/pagination.py), so a caller can make a token that
passes it with any position in it: here, `pagination.encode` does exactly that.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import generation_service_pb2 as gs
from scriptgen.v1 import knowledge_pb2
from scriptgen.v1 import project_service_pb2 as ps

from server import SyntheticConfig
from server.pagination import encode
from tests.backends.postgres import fresh_database
from tests.conftest import CoreFactory
from tests.server.rpc import Stubs, connect, field_violations

#: Positions no store made: wrong count, wrong types, beyond int64 (and int32 for episode
#: numbers), a JSON `true` where a number goes.
BAD_POSITIONS: list[list[object]] = [
    [],
    ["x", "y"],
    [2**70, "x"],
    [-(2**70), "x"],
    [1, 2],
    [1, "x", "y"],
    [True, "x"],
    [1.5, "x"],
    [[], "x"],
    [None, "x"],
]
BAD_EPISODE_POSITIONS: list[list[object]] = [
    [],
    ["7"],
    [2**31],
    [-1],
    [2**70],
    [True],
    [1, 2],
]
LISTS = ["projects", "episodes", "generations", "knowledge"]


@pytest.fixture(params=["sqlite", "postgres"])
async def rpc(
    request: pytest.FixtureRequest, start_core: CoreFactory, tmp_path: Path
) -> AsyncIterator[Stubs]:
    """Stubs of a core on SQLite, then on PostgreSQL."""
    async with contextlib.AsyncExitStack() as stack:
        overrides: dict[str, object] = {}
        if request.param == "postgres":
            server_url = request.getfixturevalue("postgres_url")
            overrides["database_url"] = await stack.enter_async_context(fresh_database(server_url))
        core = await start_core(
            SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0), **overrides
        )
        yield await stack.enter_async_context(connect(f"127.0.0.1:{core.grpc_port}"))


Listing = Callable[..., Awaitable[Any]]


def _lister(rpc: Stubs, listing: str, project: str) -> tuple[str, Listing]:
    """The list name `listing`'s tokens carry, and a call of it: (page_token, page_size)."""
    project_id = project.removeprefix("projects/")
    kind = knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED
    calls: dict[str, tuple[str, Listing]] = {
        "projects": (
            "projects",
            lambda token, size=0: rpc.projects.ListProjects(
                ps.ListProjectsRequest(page_token=token, page_size=size)
            ),
        ),
        "episodes": (
            f"episodes:{project_id}",
            lambda token, size=0: rpc.projects.ListEpisodes(
                ps.ListEpisodesRequest(parent=project, page_token=token, page_size=size)
            ),
        ),
        "generations": (
            f"generations:{project}",
            lambda token, size=0: rpc.generations.ListGenerations(
                gs.ListGenerationsRequest(parent=project, page_token=token, page_size=size)
            ),
        ),
        "knowledge": (
            f"knowledge:{project_id}:{kind}",
            lambda token, size=0: rpc.projects.ListKnowledgeDocuments(
                ps.ListKnowledgeDocumentsRequest(parent=project, page_token=token, page_size=size)
            ),
        ),
    }
    return calls[listing]


async def _filled_project(rpc: Stubs) -> str:
    project = await rpc.create_project()
    await rpc.create_project("Second")
    for title in ("One", "Two"):
        events = await rpc.generate(project.name, title)
        assert events[-1].HasField("completed"), events[-1]
    for title in ("Mina", "Harbour"):
        await rpc.projects.AddKnowledgeDocument(
            ps.AddKnowledgeDocumentRequest(
                parent=project.name,
                document=knowledge_pb2.KnowledgeDocument(
                    kind=knowledge_pb2.KNOWLEDGE_KIND_CHARACTER_PROFILE, title=title, text="Text."
                ),
            )
        )
    return project.name


@pytest.mark.parametrize("listing", LISTS)
async def test_hand_made_page_tokens_are_invalid_argument(rpc: Stubs, listing: str) -> None:
    project = await _filled_project(rpc)
    list_name, call = _lister(rpc, listing, project)
    positions = BAD_EPISODE_POSITIONS if listing == "episodes" else BAD_POSITIONS
    outcomes: dict[str, str] = {}
    for position in positions:
        try:
            await call(encode(list_name, position))  # type: ignore[arg-type]
        except aio.AioRpcError as error:
            named = error.code() == grpc.StatusCode.INVALID_ARGUMENT and (
                "page_token" in field_violations(error)
            )
            outcomes[repr(position)] = "refused" if named else error.code().name
        else:
            outcomes[repr(position)] = "answered"
    assert outcomes == dict.fromkeys(outcomes, "refused")


async def test_a_real_page_token_still_resumes_every_list(rpc: Stubs) -> None:
    project = await _filled_project(rpc)
    for listing in LISTS:
        _, call = _lister(rpc, listing, project)
        first = await call("", 1)
        assert first.next_page_token, listing
        rest = await call(first.next_page_token, 1)
        assert not rest.next_page_token, listing


@pytest.mark.parametrize(
    "number", ["9" * 5000, "1" + "0" * 4400, "9" * 11, "2147483648", "0" * 5000, "0"]
)
async def test_episode_numbers_of_many_digits_are_invalid_argument(rpc: Stubs, number: str) -> None:
    project = await rpc.create_project()
    name = f"{project.name}/episodes/{number}"
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: rpc.projects.GetEpisode(ps.GetEpisodeRequest(name=name)),
        lambda: rpc.projects.DeleteEpisode(ps.DeleteEpisodeRequest(name=name)),
        lambda: rpc.projects.ExportEpisode(
            ps.ExportEpisodeRequest(name=name, format=ps.EXPORT_FORMAT_FOUNTAIN)
        ),
    ]
    for call in calls:
        with pytest.raises(aio.AioRpcError) as raised:
            await call()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "name" in field_violations(raised.value)


async def test_leading_zeros_of_an_episode_number_are_not_digits(rpc: Stubs) -> None:
    project = await rpc.create_project()
    events = await rpc.generate(project.name)
    assert events[-1].completed.episode.number == 1
    padded = f"{project.name}/episodes/{'0' * 5000}1"
    got = await rpc.projects.GetEpisode(ps.GetEpisodeRequest(name=padded))
    assert got.episode.number == 1
