"""The providers' SSE decoder: events split anywhere, CRLF, comments, multi-line data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import orjson
import pytest

from server.providers.event_stream import Event, events


async def chunks(parts: Sequence[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def decoded(parts: Sequence[bytes]) -> list[Event]:
    return [event async for event in events(chunks(parts))]


BODY = (
    b": keep-alive\n\n"
    b'data: {"a": 1}\n\n'
    b'event: message_start\ndata: {"b": "\xc3\xa9"}\n\n'
    b"data: one\ndata:two\n\n"
    b"id: 7\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    Event(None, '{"a": 1}'),
    Event("message_start", '{"b": "é"}'),
    Event(None, "one\ntwo"),
    Event(None, "[DONE]"),
]


async def test_whole_body() -> None:
    assert await decoded([BODY]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
async def test_split_at_every_size_even_inside_utf8(size: int) -> None:
    parts = [BODY[i : i + size] for i in range(0, len(BODY), size)]
    assert await decoded(parts) == EXPECTED


@pytest.mark.parametrize("size", [1, 5, 1000])
async def test_crlf_and_cr_line_ends(size: int) -> None:
    body = BODY.replace(b"\n", b"\r\n")
    assert await decoded([body[i : i + size] for i in range(0, len(body), size)]) == EXPECTED
    assert await decoded([BODY.replace(b"\n", b"\r")]) == EXPECTED


async def test_an_unfinished_last_event_is_dropped_and_json_parses() -> None:
    found = await decoded([b'data: {"x": [1, 2]}\n\ndata: {"cut'])
    assert found == [Event(None, '{"x": [1, 2]}')]
    assert found[0].json() == {"x": [1, 2]}
    with pytest.raises(orjson.JSONDecodeError):
        Event(None, '{"cut').json()
