"""Hypothesis-made and random-byte requests to every RPC: no crash, no INTERNAL, no UNKNOWN."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scriptgen.v1 import generation_service_pb2, project_service_pb2

from tests.fuzz.conftest import Live

EXAMPLES = 60
_BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
_TEXT = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["projects/p1", "projects/p1/episodes/1", "generations/g1", "", "projects/"]),
)


def _methods() -> list[MethodDescriptor]:
    found = []
    for module, service in (
        (project_service_pb2, "ProjectService"),
        (generation_service_pb2, "GenerationService"),
    ):
        found.extend(module.DESCRIPTOR.services_by_name[service].methods)
    return found


def _call(channel: grpc.Channel, method: MethodDescriptor, payload: bytes, key: str) -> None:
    code = _code(channel, method, payload, key)
    assert code not in _BAD, (method.name, payload[:80], code)


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
        return error.code()
    return grpc.StatusCode.OK


def _message(descriptor: object, data: st.DataObject, depth: int = 0) -> Message:
    message: Message = descriptor._concrete_class()  # type: ignore[attr-defined]
    for field in message.DESCRIPTOR.fields:
        if not data.draw(st.booleans()):
            continue
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            setattr(message, field.name, data.draw(_TEXT))
        elif field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
            bits = 31 if field.type == FieldDescriptor.TYPE_INT32 else 63
            value = data.draw(st.integers(-(2**bits), 2**bits - 1))
            if not field.is_repeated:
                setattr(message, field.name, value)
        elif field.type == FieldDescriptor.TYPE_ENUM and not field.is_repeated:
            setattr(message, field.name, data.draw(st.integers(-5, 20)))
        elif field.type == FieldDescriptor.TYPE_BOOL and not field.is_repeated:
            setattr(message, field.name, data.draw(st.booleans()))
        elif (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.is_repeated
            and depth < 2
            and field.message_type is not None
            and field.message_type.full_name.startswith("scriptgen.")
        ):
            getattr(message, field.name).CopyFrom(_message(field.message_type, data, depth + 1))
    return message


def test_random_bytes_never_crash_a_method(live: Live) -> None:
    with grpc.insecure_channel(live.grpc) as channel:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(method=st.sampled_from(_methods()), payload=st.binary(max_size=2048))
        def exercise(method: MethodDescriptor, payload: bytes) -> None:
            _call(channel, method, payload, live.key)

        exercise()


def test_generated_requests_never_crash_a_method(live: Live) -> None:
    with grpc.insecure_channel(live.grpc) as channel:

        @settings(
            max_examples=EXAMPLES * 2,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(method=st.sampled_from(_methods()), data=st.data())
        def exercise(method: MethodDescriptor, data: st.DataObject) -> None:
            request = _message(method.input_type, data)
            _call(channel, method, request.SerializeToString(), live.key)

        exercise()
