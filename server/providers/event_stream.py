"""Server-Sent Events read off a provider's HTTP body: the streaming APIs' wire format, fast.

The SDKs send the request (auth, headers, status errors, Retry-After); the
streamed body is decoded here instead of by the SDKs' stream classes, which
build a pydantic model for every token. Each event's `data` is parsed with
orjson into plain dicts. Decoding follows the SSE rules the SDKs follow: lines
end in LF, CRLF or CR; a blank line ends an event; `data:` lines join with LF;
comments, events with neither data nor a name, and an unfinished last event
are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: its name (None when unnamed) and its data."""

    name: str | None
    data: str

    def json(self) -> Any:
        """The data parsed as JSON; raises ValueError (orjson.JSONDecodeError) when it is not."""
        return orjson.loads(self.data)


def _event(lines: list[bytes]) -> Event | None:
    name: str | None = None
    data: list[bytes] = []
    for line in lines:
        field, colon, value = line.partition(b":")
        if not colon:
            value = b""
        elif value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode() or None
        # `id`, `retry`, comments (an empty field name) and unknown fields: nothing to do.
    if not data and name is None:
        return None
    return Event(name, b"\n".join(data).decode())


async def events(body: AsyncIterable[bytes]) -> AsyncIterator[Event]:
    """The events of an SSE body given as byte chunks of any size."""
    async for batch in event_batches(body):
        for event in batch:
            yield event


async def event_batches(body: AsyncIterable[bytes]) -> AsyncIterator[list[Event]]:
    """The events of an SSE body, as the lists of those each byte chunk completed.

    A body read once per delta cut (`server.providers.body_pacing`) brings a few
    events per chunk: a provider can hand their text on as one piece, and the
    path after it runs once per read instead of once per token.
    """
    pending = b""
    lines: list[bytes] = []
    async for chunk in body:
        if not chunk:
            continue
        pending += chunk
        if b"\r" in pending:
            # A CR at the very end may be the first half of a CRLF: keep it for the next chunk.
            held = pending.endswith(b"\r")
            text = pending[:-1] if held else pending
            pending = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if held else b"")
        *complete, pending = pending.split(b"\n")
        found = _dispatch(complete, lines)
        if found:
            yield found
    if pending.endswith(b"\r"):
        # The body ended on a CR: it ended that line.
        found = _dispatch([pending[:-1]], lines)
        if found:
            yield found
    # A last event without its blank line is dropped, as the SDKs drop it.


def _dispatch(complete: list[bytes], lines: list[bytes]) -> list[Event]:
    """Add `complete` lines to the event in `lines`; the events that a blank line ended."""
    found: list[Event] = []
    for line in complete:
        if line:
            lines.append(line)
        elif lines:
            event = _event(lines)
            lines.clear()
            if event is not None:
                found.append(event)
    return found
