"""CreateProject's request_id: a retry gets the same project; another request is refused."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import project_pb2, project_service_pb2

from tests.server.rpc import connect, error_info, field_violations

pb = project_service_pb2


def _request(title: str = "Night Shift", **fields: str) -> pb.CreateProjectRequest:
    return pb.CreateProjectRequest(project=project_pb2.Project(title=title), **fields)


async def test_a_retry_with_the_same_key_returns_the_same_project(core_target: str) -> None:
    async with connect(core_target) as rpc:
        first = (await rpc.projects.CreateProject(_request(request_id="create-1"))).project
        retries = await asyncio.gather(
            *(rpc.projects.CreateProject(_request(request_id="create-1")) for _ in range(5))
        )
        assert {reply.project.name for reply in retries} == {first.name}
        assert all(reply.project == first for reply in retries)
        listing = await rpc.projects.ListProjects(pb.ListProjectsRequest())
        assert [p.name for p in listing.projects] == [first.name]
        other = (await rpc.projects.CreateProject(_request(request_id="create-2"))).project
        assert other.name != first.name


async def test_the_key_with_another_request_is_already_exists(core_target: str) -> None:
    async with connect(core_target) as rpc:
        await rpc.projects.CreateProject(_request(request_id="k.1", project_id="show"))
        for changed in (
            _request("Day Shift", request_id="k.1", project_id="show"),
            _request(request_id="k.1", project_id="other-show"),
            _request(request_id="k.1"),
        ):
            with pytest.raises(aio.AioRpcError) as raised:
                await rpc.projects.CreateProject(changed)
            assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert error_info(raised.value).reason == "REQUEST_ID_REUSED"
        # The same request with a client-chosen id is a retry, not PROJECT_EXISTS.
        again = await rpc.projects.CreateProject(_request(request_id="k.1", project_id="show"))
        assert again.project.name == "projects/show"


@pytest.mark.parametrize("request_id", ["has space", "x" * 101, "slash/no", "ünï"])
async def test_a_malformed_key_names_the_field(core_target: str, request_id: str) -> None:
    async with connect(core_target) as rpc:
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.projects.CreateProject(_request(request_id=request_id))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in field_violations(raised.value)
