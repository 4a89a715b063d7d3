"""The gateway's quick fill of plain request bodies is exactly the walked json_format path."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from scriptgen.v1 import generation_service_pb2, knowledge_pb2, project_pb2, project_service_pb2

from gateway.codec import parse_message, parse_walked
from gateway.errors import ApiError

_TYPES: list[type[Message]] = [
    generation_service_pb2.GenerateScriptRequest,
    generation_service_pb2.StreamGenerationEventsRequest,
    project_pb2.Project,
    project_service_pb2.CreateProjectRequest,
    project_service_pb2.DeleteProjectRequest,
    knowledge_pb2.KnowledgeDocument,
    empty_pb2.Empty,
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


def test_plain_bodies_are_filled_as_json_format_fills_them() -> None:
    request = generation_service_pb2.GenerateScriptRequest
    body = {"title": "Pilot", "requestId": "r-1", "detach": True, "description": ""}
    assert parse_message(body, request()) == parse_walked(body, request())
    assert parse_message(body, request()).request_id == "r-1"


def test_one_field_under_both_names_goes_the_walked_path() -> None:
    body = {"requestId": "a", "request_id": "b"}
    request = generation_service_pb2.GenerateScriptRequest
    assert _outcome(parse_message, body, request) == _outcome(parse_walked, body, request)


def test_a_lone_surrogate_is_named_as_before() -> None:
    body = {"title": "\ud800"}
    outcome = _outcome(parse_message, body, generation_service_pb2.GenerateScriptRequest)
    assert outcome == _outcome(parse_walked, body, generation_service_pb2.GenerateScriptRequest)
    assert isinstance(outcome, tuple)
