"""Test-side reading of gateway output: raw SSE blocks, EventSource-style events, projects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse


@dataclass
class Block:
    """One blank-line-terminated SSE block, its lines kept as written."""

    lines: list[str] = field(default_factory=list)

    def value(self, name: str) -> str | None:
        for line in self.lines:
            key, _, rest = line.partition(": ")
            if key == name:
                return rest
        return None


def split_blocks(raw: str) -> list[Block]:
    """Split an event stream body into blocks, asserting it ends with a blank line."""
    assert raw.endswith("\n\n"), f"stream does not end with a complete block: {raw[-80:]!r}"
    return [Block(chunk.split("\n")) for chunk in raw[:-2].split("\n\n")]


def dispatched(events: list[ServerSentEvent]) -> list[ServerSentEvent]:
    """What a browser's EventSource dispatches: only blocks with data."""
    return [event for event in events if event.data]


async def read_sse(
    http: httpx.AsyncClient, url: str, *, method: str = "GET", **kwargs: Any
) -> list[ServerSentEvent]:
    """Every block of an event stream, read with httpx-sse until the server ends it."""
    async with aconnect_sse(http, method, url, **kwargs) as source:
        source.response.raise_for_status()
        return [event async for event in source.aiter_sse()]


def sequences(events: list[ServerSentEvent]) -> list[int]:
    return [int(event.id) for event in dispatched(events)]


def script_of(events: list[ServerSentEvent]) -> str:
    return "".join(
        json.loads(event.data)["textDelta"]["text"]
        for event in dispatched(events)
        if event.event == "delta"
    )
