"""The gateway's direct JSON of text deltas is exactly json_format's proto3 JSON."""

from __future__ import annotations

import random

import pytest
from google.protobuf import json_format
from scriptgen.v1 import generation_pb2

from gateway.codec import dumps, event_json

Event = generation_pb2.GenerationEvent
_ALPHABET = 'aZ09 "\\/\n\r\t\x00\x1f\x7f\u2028\u2029é한국어😀{}:,'


def _reference(event: Event) -> str:
    return dumps(json_format.MessageToDict(event))


_STAMPS = [
    (0, 0),
    (1_795_000_000, 0),
    (1_795_000_000, 5_000_000),
    (1_795_000_001, 123_456_000),
    (1_795_000_002, 123_456_789),
    (253_402_300_799, 999_999_999),
    (1, 1),
]


@pytest.mark.parametrize(("seconds", "nanos"), _STAMPS)
def test_timestamps_match(seconds: int, nanos: int) -> None:
    event = Event(generation="generations/g1", sequence=3)
    event.time.seconds, event.time.nanos = seconds, nanos
    event.text_delta.text = "x"
    assert event_json(event) == _reference(event)


def test_random_deltas_match() -> None:
    rng = random.Random(7)
    for index in range(2000):
        event = Event()
        if index % 5:
            event.generation = "generations/g" + "".join(rng.choices("0123456789abcdef", k=20))
        if index % 7:
            event.sequence = rng.randrange(1, 2**62)
        if index % 3:
            event.time.GetCurrentTime()
        event.text_delta.text = "".join(rng.choices(_ALPHABET, k=rng.randrange(0, 12)))
        event.text_delta.offset = 0 if index % 4 == 0 else rng.randrange(1, 2**40)
        assert event_json(event) == _reference(event), event


def test_other_kinds_use_json_format() -> None:
    event = Event(generation="generations/g1", sequence=1, queued=Event.Queued(parent="projects/p"))
    assert event_json(event) == _reference(event)
