"""RPCError: typed subclasses per code and decoded google.rpc details, from real core errors
and from hand-made statuses."""

from __future__ import annotations

import pickle
from datetime import timedelta

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from scriptgen import (
    ERROR_DOMAIN,
    AlreadyExistsError,
    Client,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    RPCError,
    ScriptgenError,
    ScriptMismatchError,
    SequenceGapError,
    ServerError,
    StreamError,
    StreamInterruptedError,
)
from scriptgen.v1 import project_pb2


def _packed(
    *details: error_details_pb2.ErrorInfo | error_details_pb2.RetryInfo,
) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return packed


async def test_an_invalid_project_is_invalid_argument_with_field_violations(
    client: Client,
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await client.create_project(title="", language="not a language tag!")
    error = raised.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.status is not None
    assert error.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert error.reason == "FIELD_INVALID"
    assert error.domain == ERROR_DOMAIN
    fields = [violation.field for violation in error.field_violations]
    assert "project.title" in fields
    assert "project.language" in fields
    assert all(violation.description for violation in error.field_violations)
    line = error.describe()
    assert line.startswith("INVALID_ARGUMENT: ")
    assert "[FIELD_INVALID]" in line
    assert "project.title: " in line
    assert "\n" not in line


async def test_a_missing_project_is_not_found_with_resource_info(client: Client) -> None:
    with pytest.raises(NotFoundError) as raised:
        await client.get_project("projects/nowhere")
    error = raised.value
    assert isinstance(error, RPCError)
    assert isinstance(error, ScriptgenError)
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.reason == "PROJECT_NOT_FOUND"
    assert error.resource is not None
    assert error.resource.resource_name == "projects/nowhere"
    assert "projects/nowhere" in error.message
    assert error.field_violations == []
    assert error.retry_delay is None


async def test_a_taken_project_id_is_already_exists(client: Client) -> None:
    await client.create_project(title="First", project_id="twin")
    with pytest.raises(AlreadyExistsError) as raised:
        await client.create_project(title="Second", project_id="twin")
    assert raised.value.reason == "PROJECT_EXISTS"


async def test_a_reused_request_id_for_another_request_is_already_exists(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot", request_id="episode-one") as stream:
        await stream.collect()
    with pytest.raises(AlreadyExistsError) as raised:
        async with client.generate(project.name, "Another", request_id="episode-one") as stream:
            await stream.collect()
    assert raised.value.reason == "REQUEST_ID_REUSED"


async def test_deleting_a_project_with_episodes_is_failed_precondition(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot") as stream:
        assert (await stream.collect()).outcome == "completed"
    with pytest.raises(FailedPreconditionError) as raised:
        await client.delete_project(project.name)
    assert raised.value.reason == "PROJECT_HAS_EPISODES"


def test_from_status_decodes_every_known_detail_and_keeps_strangers() -> None:
    stranger = any_pb2.Any(type_url="type.example.com/x.Unknown", value=b"\x08\x01")
    status = status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        message="too many jobs",
        details=[
            *_packed(
                error_details_pb2.ErrorInfo(reason="TOO_MANY_JOBS", domain=ERROR_DOMAIN),
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2)),
            ),
            stranger,
        ],
    )
    error = RPCError.from_status(status)
    assert type(error) is ResourceExhaustedError
    assert error.reason == "TOO_MANY_JOBS"
    assert error.retry_delay == timedelta(seconds=2)
    assert error.details[-1] == stranger
    assert error.describe() == "RESOURCE_EXHAUSTED: too many jobs [TOO_MANY_JOBS] (retry in 2s)"


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.OUT_OF_RANGE, InvalidArgumentError),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
        (grpc.StatusCode.OK, RPCError),
    ],
)
def test_codes_map_to_their_error_family(code: grpc.StatusCode, error_type: type[RPCError]) -> None:
    error = RPCError.from_status(status_pb2.Status(code=code.value[0], message="m"))
    assert type(error) is error_type
    assert error.code is code
    assert error.details == []
    assert error.reason is None


def test_an_unknown_code_number_is_unknown() -> None:
    error = RPCError.from_status(status_pb2.Status(code=99, message="from the future"))
    assert error.code is grpc.StatusCode.UNKNOWN


def test_errors_survive_pickling() -> None:
    status = status_pb2.Status(
        code=grpc.StatusCode.NOT_FOUND.value[0],
        message="gone",
        details=_packed(error_details_pb2.ErrorInfo(reason="PROJECT_NOT_FOUND")),
    )
    error = pickle.loads(pickle.dumps(RPCError.from_status(status)))
    assert type(error) is NotFoundError
    assert error.reason == "PROJECT_NOT_FOUND"
    assert str(error) == "NOT_FOUND: gone"


@pytest.mark.parametrize(
    "error",
    [
        StreamError("events of another job", generation="generations/g1", last_sequence=4),
        StreamInterruptedError("link lost", generation="generations/g2", last_sequence=9),
        SequenceGapError(generation="generations/g3", last_sequence=2, received=5),
        ScriptMismatchError("delta 7 starts at 3", generation="generations/g4", last_sequence=6),
    ],
    ids=lambda error: type(error).__name__,
)
def test_stream_errors_survive_pickling(error: StreamError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert copy.generation == error.generation
    assert copy.last_sequence == error.last_sequence
    if isinstance(error, SequenceGapError):
        assert isinstance(copy, SequenceGapError)
        assert copy.received == error.received == 5
