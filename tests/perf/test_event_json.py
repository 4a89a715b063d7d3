"""The gateway's direct JSON of job events is exactly json_format's proto3 JSON."""

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


def _text(rng: random.Random) -> str:
    return "".join(rng.choices(_ALPHABET, k=rng.randrange(0, 8))) if rng.random() < 0.8 else ""


def _small_kind(rng: random.Random, event: Event) -> None:
    """Fill one of the kinds `event_json` writes from a field plan, defaults included."""
    stage = rng.choice([0, 1, 2, 3, 4, 5, 99])  # 99: a number the enum does not name
    choice = rng.randrange(5)
    if choice == 0:
        event.queued.parent = _text(rng)
        event.queued.providers.extend(_text(rng) for _ in range(rng.randrange(0, 3)))
        event.queued.notice = _text(rng)
    elif choice == 1:
        event.stage_started.stage = stage  # type: ignore[assignment]
        event.stage_started.provider = _text(rng)
        event.stage_started.model = _text(rng)
    elif choice == 2:
        event.progress.stage = stage  # type: ignore[assignment]
        event.progress.fraction = rng.choice(
            [0.0, 1.0, 0.5, 1 / 3, 1e-9, 123456789.25, -2.5, rng.random()]
        )
        event.progress.message = _text(rng)
    elif choice == 3:
        switched = event.provider_switched
        switched.from_provider, switched.to_provider = _text(rng), _text(rng)
        switched.reason = _text(rng)
        switched.offset = rng.choice([0, 1, 2**40, 2**62])
    else:
        event.cancelled.reason = _text(rng)
    if rng.random() < 0.1:
        # Set, then cleared: still present as an empty object.
        getattr(event, event.WhichOneof("kind") or "queued").Clear()


def test_random_events_of_every_small_kind_match() -> None:
    rng = random.Random(11)
    for index in range(3000):
        event = Event(generation="generations/g1" if index % 3 else "", sequence=index)
        if index % 2:
            event.time.GetCurrentTime()
        _small_kind(rng, event)
        assert event_json(event) == _reference(event), event


@pytest.mark.parametrize("fraction", [float("nan"), float("inf"), float("-inf"), -0.0])
def test_doubles_json_format_writes_its_own_way_match(fraction: float) -> None:
    event = Event(generation="generations/g1", sequence=2)
    event.progress.fraction = fraction
    assert event_json(event) == _reference(event)


def test_completed_and_failed_use_json_format() -> None:
    completed = Event(generation="generations/g1", sequence=9)
    completed.completed.episode.script = "INT. ROOM - NIGHT"
    completed.completed.usage.add(provider="synthetic", output_tokens=12)
    failed = Event(generation="generations/g1", sequence=9)
    failed.failed.status.code, failed.failed.status.message = 13, "broke"
    for event in (completed, failed):
        assert event_json(event) == _reference(event)
