"""Request messages over the documented 4 MiB are INVALID_ARGUMENT with a field violation.

A real client sends raw bytes (a generic `unary_unary` / `unary_stream` call,
no serializer) to a core with keys on. The transport takes up to four times
the documented limit, so the core sees an oversized request and refuses it
itself; past the transport limit gRPC refuses it first (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio

from server import Core
from server.limits import transport_message_max
from tests.security.conftest import bearer
from tests.server.rpc import error_info, field_violations, rich_status

CREATE = "/scriptgen.v1.ProjectService/CreateProject"
GENERATE = "/scriptgen.v1.GenerationService/GenerateScript"


async def _unary(channel: aio.Channel, payload: bytes, key: str | None) -> aio.AioRpcError:
    call: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(CREATE)
    with pytest.raises(aio.AioRpcError) as raised:
        await call(payload, metadata=bearer(key) if key else None, timeout=30)
    return raised.value


async def test_an_oversized_unary_request_is_invalid_argument(
    secure_core: Core, channel: aio.Channel, alice_key: str
) -> None:
    limit = secure_core.config.max_message_bytes
    assert limit == 4 * 2**20
    error = await _unary(channel, b"\x0a" * (limit + 1), alice_key)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "FIELD_INVALID"
    violations = field_violations(error)
    assert list(violations) == ["request"]
    assert f"{limit + 1} bytes" in violations["request"] and "4 MiB" in violations["request"]
    # Exactly at the limit the bytes are parsed: these do not parse, which is another violation.
    at_limit = await _unary(channel, b"\xff" * limit, alice_key)
    assert at_limit.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid CreateProjectRequest" in field_violations(at_limit)["request"]


async def test_an_oversized_stream_request_is_invalid_argument(
    secure_core: Core, channel: aio.Channel, alice_key: str
) -> None:
    generate: aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(GENERATE)
    call = generate(
        b"\x0a" * (secure_core.config.max_message_bytes + 10), metadata=bearer(alice_key)
    )
    with pytest.raises(aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = error_details_pb2.BadRequest()
    assert any(d.Unpack(request) for d in rich_status(raised.value).details)
    assert [v.field for v in request.field_violations] == ["request"]


async def test_the_key_is_checked_before_the_size(secure_core: Core, channel: aio.Channel) -> None:
    error = await _unary(channel, b"\x0a" * (secure_core.config.max_message_bytes + 1), None)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_past_the_transport_limit_grpc_refuses_first(
    secure_core: Core, channel: aio.Channel, alice_key: str
) -> None:
    transport = transport_message_max(secure_core.config.max_message_bytes)
    assert transport == 16 * 2**20
    error = await _unary(channel, b"\x0a" * (transport + 1), alice_key)
    # gRPC's own answer, before any code of ours runs (documented in README, Input limits).
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
