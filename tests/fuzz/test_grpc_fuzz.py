"""Hypothesis-made and random-byte requests to each RPC, one test per RPC and kind of input.

No answer may be INTERNAL, UNKNOWN (a crash) or UNAVAILABLE (a core that fell
over or a store it broke), and after each test the core still answers
Health.Check SERVING. Examples are bounded per RPC so the file stays well
under a minute; fuzzed names are drawn partly from real resources (a project
with an episode and a knowledge document, a finished job: tests/fuzz/conftest).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scriptgen.v1 import generation_service_pb2, project_service_pb2

from tests.fuzz.conftest import Live

#: Examples per RPC: random bytes, and messages of the RPC's request type.
RANDOM_EXAMPLES = 50
GENERATED_EXAMPLES = 150
_BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}
_NAMES = ["projects/p1", "projects/p1/episodes/1", "generations/g1", "", "projects/"]


def _methods() -> list[MethodDescriptor]:
    found = []
    for module, service in (
        (project_service_pb2, "ProjectService"),
        (generation_service_pb2, "GenerationService"),
    ):
        found.extend(module.DESCRIPTOR.services_by_name[service].methods)
    return found


#: Every RPC; the ones that delete or cancel last, so the real resources last as long as
#: the other RPCs are fuzzed.
METHODS = sorted(
    _methods(),
    key=lambda m: (m.name.startswith(("Delete", "Cancel")), m.name == "DeleteProject"),
)


def _code(
    channel: grpc.Channel, method: MethodDescriptor, payload: bytes, key: str
) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {key}"),)
    try:
        if method.server_streaming:
            stream: Any = channel.unary_stream(path)(payload, metadata=metadata, timeout=10)  # type: ignore[arg-type]
            for _, _ in zip(range(3), stream, strict=False):
                pass  # a few events are enough: the job itself is not under test
            stream.cancel()
        else:
            channel.unary_unary(path)(payload, metadata=metadata, timeout=10)  # type: ignore[arg-type]
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def _message(descriptor: object, draw: st.DrawFn, text: Any, depth: int = 0) -> Message:
    message: Message = descriptor._concrete_class()  # type: ignore[attr-defined]
    for field in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            setattr(message, field.name, draw(text))
        elif field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
            bits = 31 if field.type == FieldDescriptor.TYPE_INT32 else 63
            value = draw(st.one_of(st.integers(0, 100), st.integers(-(2**bits), 2**bits - 1)))
            if not field.is_repeated:
                setattr(message, field.name, value)
        elif field.type == FieldDescriptor.TYPE_ENUM and not field.is_repeated:
            setattr(message, field.name, draw(st.integers(-5, 20)))
        elif field.type == FieldDescriptor.TYPE_BOOL and not field.is_repeated:
            setattr(message, field.name, draw(st.booleans()))
        elif (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.is_repeated
            and depth < 2
            and field.message_type is not None
            and field.message_type.full_name.startswith("scriptgen.")
        ):
            nested = _message(field.message_type, draw, text, depth + 1)
            getattr(message, field.name).CopyFrom(nested)
    return message


def _assert_serving(channel: grpc.Channel) -> None:
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    answer = check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def _fuzz(live: Live, method: MethodDescriptor, examples: int, inputs: Any) -> None:
    """Call `method` with `examples` payloads drawn from `inputs`; none may crash it."""
    codes: list[grpc.StatusCode] = []
    with grpc.insecure_channel(live.grpc) as channel:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(payload=inputs)
        def exercise(payload: bytes) -> None:
            code = _code(channel, method, payload, live.key)
            codes.append(code)
            assert code not in _BAD, (method.name, payload[:80], code)

        exercise()
        _assert_serving(channel)
    assert len(codes) >= examples // 2, f"{method.name} got only {len(codes)} examples"


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.name)
def test_random_bytes_never_crash_the_rpc(live: Live, method: MethodDescriptor) -> None:
    _fuzz(live, method, RANDOM_EXAMPLES, st.binary(max_size=2048))


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.name)
def test_generated_requests_never_crash_the_rpc(live: Live, method: MethodDescriptor) -> None:
    text = st.one_of(
        st.sampled_from(live.names),
        st.sampled_from(_NAMES),
        st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), max_size=40),
        st.text(max_size=300),
    )

    @st.composite
    def requests(draw: st.DrawFn) -> bytes:
        return _message(method.input_type, draw, text).SerializeToString()

    _fuzz(live, method, GENERATED_EXAMPLES, requests())


def test_every_rpc_of_both_services_is_fuzzed() -> None:
    names = {method.full_name for method in METHODS}
    for module, service in (
        (project_service_pb2, "ProjectService"),
        (generation_service_pb2, "GenerationService"),
    ):
        declared = module.DESCRIPTOR.services_by_name[service].methods
        assert {m.full_name for m in declared} <= names
    assert len(names) == len(METHODS) >= 18
