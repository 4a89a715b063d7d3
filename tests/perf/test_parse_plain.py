"""The gateway's quick fill of plain request bodies is exactly the walked json_format path."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    empty_pb2,
    message_factory,
    wrappers_pb2,
)
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from scriptgen.v1 import (
    generation_service_pb2,
    knowledge_pb2,
    project_pb2,
    project_service_pb2,
    relay_service_pb2,
)

from gateway.codec import _fill_plain, parse_message, parse_walked
from gateway.errors import ApiError

_TYPES: list[type[Message]] = [
    generation_service_pb2.GenerateScriptRequest,
    generation_service_pb2.StreamGenerationEventsRequest,
    project_pb2.Project,
    project_service_pb2.CreateProjectRequest,
    project_service_pb2.DeleteProjectRequest,
    knowledge_pb2.KnowledgeDocument,
    empty_pb2.Empty,
    relay_service_pb2.RelayOpen,  # a oneof of messages beside plain fields
    relay_service_pb2.RelayHeaders,
]


def _keys(kind: type[Message]) -> list[str]:
    """Every field's JSON and proto name, and a key that names none."""
    fields = kind.DESCRIPTOR.fields
    return sorted({f.json_name for f in fields} | {f.name for f in fields} | {"unknownField"})


# Strings include lone surrogates (json.loads makes them from "\\ud800"), which no proto
# string field holds; other values are of the wrong type for a plain field, or right for
# another kind of field.
_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["\ud800", "a\udfffb", "PROJECT_TYPE_SERIES", "1.5"]),
    st.booleans(),
    st.none(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.sampled_from(["title", "x"]), st.text(max_size=3), max_size=2),
)


def _outcome(parse: Any, body: dict[str, Any], kind: type[Message]) -> object:
    """The message parsed, or the error's status, message and details."""
    try:
        return parse(body, kind()).SerializeToString(deterministic=True)
    except ApiError as error:
        return (error.code, error.message, error.details_json())


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_a_quick_fill_matches_the_walked_path(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(_TYPES))
    body = data.draw(st.dictionaries(st.sampled_from(_keys(kind)), _VALUES, max_size=4))
    assert _outcome(parse_message, body, kind) == _outcome(parse_walked, body, kind)


def test_plain_bodies_take_the_quick_fill_and_match_json_format() -> None:
    request = generation_service_pb2.GenerateScriptRequest
    body = {"title": "Pilot", "requestId": "r-1", "detach": True, "description": ""}
    quick = request()
    assert _fill_plain(body, quick)
    assert quick == parse_walked(body, request()) and quick.request_id == "r-1"
    assert _fill_plain({"title": "X", "tone": "calm"}, project_pb2.Project())


@pytest.mark.parametrize(
    "body",
    [
        {"title": 1},  # not a string
        {"detach": 1},  # an int is not a bool
        {"title": "\ud800"},  # not text
        {"requestId": "a", "request_id": "b"},  # one field twice
        {"title": "X", "unknown": "y"},
        {"parent": None},
    ],
)
def test_other_bodies_take_the_walked_path_and_leave_the_message_alone(
    body: dict[str, Any],
) -> None:
    message = generation_service_pb2.GenerateScriptRequest(title="kept")
    assert not _fill_plain(body, message)
    assert message == generation_service_pb2.GenerateScriptRequest(title="kept")


def test_well_known_types_are_never_filled_plainly() -> None:
    assert not _fill_plain({"value": "x"}, wrappers_pb2.StringValue())
    assert not _fill_plain({"typeUrl": "x"}, any_pb2.Any())
    assert not _fill_plain({}, wrappers_pb2.StringValue())  # json_format refuses `{}` here


def _message_type(name: str, *fields: tuple[str, int, str]) -> type[Message]:
    """A message type made here: (field name, type, JSON name) each, in number order."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{name}.proto", package="plain_test", syntax="proto3"
    )
    message = file.message_type.add(name=name)
    for number, (field, kind, json_name) in enumerate(fields, start=1):
        message.field.add(
            name=field, number=number, type=kind, label=_OPTIONAL, json_name=json_name
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"plain_test.{name}"))


_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_INT32 = descriptor_pb2.FieldDescriptorProto.TYPE_INT32
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL


@pytest.mark.parametrize(
    "kind",
    [
        # `b` is field a's JSON name and field b's proto name: json_format takes field a.
        _message_type("Both", ("a", _STRING, "b"), ("b", _STRING, "bee")),
        # `s` is an int field's JSON name and a string field's proto name.
        _message_type("Mixed", ("n", _INT32, "s"), ("s", _STRING, "ess")),
    ],
)
def test_a_json_name_that_is_another_fields_name_names_its_own_field(
    kind: type[Message],
) -> None:
    for body in ({"b": "x"}, {"s": "x"}, {"bee": "y"}, {"ess": "y"}, {"s": 3}):
        assert _outcome(parse_message, body, kind) == _outcome(parse_walked, body, kind)
    if kind.DESCRIPTOR.name == "Both":
        filled = kind()
        assert _fill_plain({"b": "x"}, filled)
        assert [(field.name, value) for field, value in filled.ListFields()] == [("a", "x")]
    else:
        assert not _fill_plain({"s": "x"}, kind())


def test_a_lone_surrogate_is_named_as_before() -> None:
    body = {"title": "\ud800"}
    outcome = _outcome(parse_message, body, generation_service_pb2.GenerateScriptRequest)
    assert outcome == _outcome(parse_walked, body, generation_service_pb2.GenerateScriptRequest)
    assert isinstance(outcome, tuple)
