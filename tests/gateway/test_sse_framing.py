"""Exact SSE frames for each kind of job event."""

from __future__ import annotations

import json

import grpc
from google.protobuf import json_format
from scriptgen.v1 import generation_pb2, project_pb2

from gateway.errors import ApiError
from gateway.sse import EVENT_NAMES, PING, event_frame, failed_frame, retry_frame

Event = generation_pb2.GenerationEvent


def test_retry_frame() -> None:
    assert retry_frame(1500) == b"retry: 1500\n\n"


def test_delta_frame_is_id_event_and_one_line_of_json() -> None:
    event = Event(generation="generations/g1", sequence=7)
    event.text_delta.text = "MAYA\nWhere were you?\r\n 한국어"
    event.text_delta.offset = 42
    frame = event_frame(event).decode()
    lines = frame.split("\n")
    assert lines[0] == "id: 7"
    assert lines[1] == "event: delta"
    assert lines[2].startswith("data: ")
    assert lines[3:] == ["", ""]
    payload = json.loads(lines[2].removeprefix("data: "))
    assert payload["textDelta"] == {"text": "MAYA\nWhere were you?\r\n 한국어", "offset": "42"}
    assert json_format.ParseDict(payload, Event()) == event


def test_every_kind_has_its_event_name() -> None:
    kinds = [field.name for field in Event.DESCRIPTOR.oneofs_by_name["kind"].fields]
    assert set(kinds) - set(EVENT_NAMES) == {"heartbeat"}
    samples = {
        "queued": Event(queued=Event.Queued(parent="projects/p")),
        "stage_started": Event(stage_started=Event.StageStarted(stage=generation_pb2.STAGE_WRITE)),
        "progress": Event(progress=Event.Progress(fraction=0.5)),
        "provider_switched": Event(provider_switched=Event.ProviderSwitched(to_provider="b")),
        "completed": Event(completed=Event.Completed(episode=project_pb2.Episode(number=1))),
        "failed": Event(failed=Event.Failed()),
        "cancelled": Event(cancelled=Event.Cancelled(reason="by request")),
    }
    for kind, event in samples.items():
        event.sequence = 3
        assert event_frame(event).decode().split("\n")[1] == f"event: {EVENT_NAMES[kind]}"


def test_heartbeat_advances_the_id_without_dispatching() -> None:
    event = Event(generation="generations/g1", sequence=12, heartbeat=Event.Heartbeat())
    assert event_frame(event) == b"id: 12\n: ping\n\n"
    assert PING == b": ping\n\n"


def test_failure_after_the_first_byte_is_a_failed_event_without_id() -> None:
    frame = failed_frame("generations/g1", ApiError(grpc.StatusCode.UNAVAILABLE, "core went away"))
    lines = frame.decode().split("\n")
    assert lines[0] == "event: failed"
    assert not any(line.startswith("id:") for line in lines)
    payload = json.loads(lines[1].removeprefix("data: "))
    assert payload == {
        "generation": "generations/g1",
        "failed": {"status": {"code": 14, "message": "core went away", "details": []}},
    }
