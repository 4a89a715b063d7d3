"""Project story fields over gRPC: defaults, limits naming their field, updates by field mask."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc import aio
from scriptgen.v1 import project_pb2
from scriptgen.v1 import project_service_pb2 as ps

from tests.server.rpc import connect, field_violations


async def test_defaults_and_round_trip(core_target: str) -> None:
    async with connect(core_target) as rpc:
        plain = await rpc.create_project()
        assert plain.status == project_pb2.PROJECT_STATUS_ACTIVE
        assert (plain.audience, plain.tone, plain.target_episode_minutes) == ("", "", 0)
        full = await rpc.create_project(
            "밤 근무",
            language="ko",
            audience="20-30대 직장인",
            tone="건조한 유머",
            target_episode_minutes=180,
            status=project_pb2.PROJECT_STATUS_PAUSED,
        )
        got = (await rpc.projects.GetProject(ps.GetProjectRequest(name=full.name))).project
    assert got == full
    assert (got.audience, got.tone, got.target_episode_minutes) == (
        "20-30대 직장인",
        "건조한 유머",
        180,
    )
    assert got.status == project_pb2.PROJECT_STATUS_PAUSED


async def test_limits_name_each_bad_field(core_target: str) -> None:
    async with connect(core_target) as rpc:
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.create_project(
                audience="a" * 201, tone="t" * 501, target_episode_minutes=181, status=9
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(raised.value)) == {
        "project.audience",
        "project.tone",
        "project.target_episode_minutes",
        "project.status",
    }


async def test_update_mask_changes_the_story_fields(core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project(audience="kids")
        changes = project_pb2.Project(
            name=project.name,
            tone="warm",
            target_episode_minutes=25,
            status=project_pb2.PROJECT_STATUS_ARCHIVED,
            audience="ignored: not in the mask",
        )
        reply = await rpc.projects.UpdateProject(
            ps.UpdateProjectRequest(
                project=changes,
                update_mask=field_mask_pb2.FieldMask(
                    paths=["tone", "target_episode_minutes", "status"]
                ),
            )
        )
        updated = reply.project
        assert (updated.tone, updated.target_episode_minutes) == ("warm", 25)
        assert updated.status == project_pb2.PROJECT_STATUS_ARCHIVED
        assert updated.audience == "kids"
        # UNSPECIFIED in a mask means the default, ACTIVE; a negative length is refused.
        reply = await rpc.projects.UpdateProject(
            ps.UpdateProjectRequest(
                project=project_pb2.Project(name=project.name),
                update_mask=field_mask_pb2.FieldMask(paths=["status"]),
            )
        )
        assert reply.project.status == project_pb2.PROJECT_STATUS_ACTIVE
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.projects.UpdateProject(
                ps.UpdateProjectRequest(
                    project=project_pb2.Project(name=project.name, target_episode_minutes=-1),
                    update_mask=field_mask_pb2.FieldMask(paths=["target_episode_minutes"]),
                )
            )
    assert list(field_violations(raised.value)) == ["project.target_episode_minutes"]
