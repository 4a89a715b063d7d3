"""Test-side access to a running core: stubs on one channel and rich-error decoding."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from scriptgen.v1 import (
    generation_pb2,
    generation_service_pb2,
    generation_service_pb2_grpc,
    project_pb2,
    project_service_pb2,
    project_service_pb2_grpc,
)

ResponseT = TypeVar("ResponseT")


@dataclass
class Stubs:
    """The core's service stubs on one channel."""

    channel: aio.Channel
    projects: project_service_pb2_grpc.ProjectServiceAsyncStub
    generations: generation_service_pb2_grpc.GenerationServiceAsyncStub

    async def create_project(
        self, title: str = "Night Shift", **fields: object
    ) -> project_pb2.Project:
        project = project_pb2.Project(title=title, **fields)  # type: ignore[arg-type]
        response = await self.projects.CreateProject(
            project_service_pb2.CreateProjectRequest(project=project)
        )
        return response.project

    async def generate(
        self, parent: str, title: str = "Pilot", **fields: object
    ) -> list[generation_pb2.GenerationEvent]:
        request = generation_service_pb2.GenerateScriptRequest(
            parent=parent,
            title=title,
            **fields,  # type: ignore[arg-type]
        )
        return [response.event async for response in self.generations.GenerateScript(request)]

    async def follow(self, name: str, after: int = 0) -> list[generation_pb2.GenerationEvent]:
        request = generation_service_pb2.StreamGenerationEventsRequest(
            name=name, after_sequence=after
        )
        return [r.event async for r in self.generations.StreamGenerationEvents(request)]


@asynccontextmanager
async def connect(target: str) -> AsyncIterator[Stubs]:
    """Stubs on a fresh channel to `target`."""
    async with aio.insecure_channel(target) as channel:
        yield Stubs(
            channel,
            project_service_pb2_grpc.ProjectServiceStub(channel),
            generation_service_pb2_grpc.GenerationServiceStub(channel),
        )


def rich_status(error: aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status the core sent with an error."""
    metadata = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no rich status in {metadata!r}")


def error_info(error: aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of an error."""
    for detail in rich_status(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo detail")


def field_violations(error: aio.AioRpcError) -> dict[str, str]:
    """field -> description of an INVALID_ARGUMENT error."""
    for detail in rich_status(error).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return {v.field: v.description for v in bad.field_violations}
    raise AssertionError("no BadRequest detail")


async def read(call: aio.UnaryStreamCall[Any, ResponseT]) -> ResponseT | None:
    """The next message of a server stream, or None at its end."""
    message = await call.read()
    if message is aio.EOF:
        return None
    return cast(ResponseT, message)


def script_of(events: list[generation_pb2.GenerationEvent]) -> str:
    """The script the deltas of `events` spell."""
    return "".join(e.text_delta.text for e in events if e.HasField("text_delta"))


def health_check(
    channel: aio.Channel,
) -> aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]:
    """Health.Check on `channel` (typeshed's HealthStub declares no methods)."""
    return channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


def health_watch(
    channel: aio.Channel,
) -> aio.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]:
    """Health.Watch on `channel`."""
    return channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


def reflection_info(
    channel: aio.Channel,
) -> aio.StreamStreamMultiCallable[
    reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
]:
    """ServerReflection.ServerReflectionInfo on `channel`."""
    return channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
