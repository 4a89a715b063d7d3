"""Pre-encoded stream responses are byte for byte the messages they stand for."""

from __future__ import annotations

import pytest
from scriptgen.v1 import generation_pb2, generation_service_pb2

from server.services.encoding import encoded_response

GenerationEvent = generation_pb2.GenerationEvent


def _delta(text: str) -> GenerationEvent:
    made = GenerationEvent(generation="generations/gabc", sequence=7)
    made.time.seconds = 1_700_000_000
    made.time.nanos = 123_000
    made.text_delta.text = text
    made.text_delta.offset = 12_345
    return made


@pytest.mark.parametrize(
    "response_type",
    [
        generation_service_pb2.GenerateScriptResponse,
        generation_service_pb2.StreamGenerationEventsResponse,
    ],
)
@pytest.mark.parametrize("length", [0, 1, 60, 127, 128, 300, 16_384, 2_000_000])
def test_an_encoded_response_is_the_serialized_message(
    response_type: type[generation_service_pb2.GenerateScriptResponse], length: int
) -> None:
    # Lengths around the varint steps (127/128, 16383/16384) and a long Korean text.
    event = _delta(("씬 " * length)[:length])
    wire = encoded_response(event.SerializeToString())
    assert wire == response_type(event=event).SerializeToString()
    assert response_type.FromString(wire).event == event


def test_both_stream_responses_carry_the_event_as_field_one() -> None:
    # encoded_response writes field 1; a renumbered proto must fail here, not on the wire.
    for response_type in (
        generation_service_pb2.GenerateScriptResponse,
        generation_service_pb2.StreamGenerationEventsResponse,
    ):
        field = response_type.DESCRIPTOR.fields_by_name["event"]
        assert field.number == 1
        assert [f.name for f in response_type.DESCRIPTOR.fields] == ["event"]
