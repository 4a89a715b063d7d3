"""One generation through the gateway as Server-Sent Events, read by a lean parser.

Many streams share one process, so the parser does little per frame: it
splits the bytes on blank lines, looks at `event:`/`data:` lines, and decodes
JSON only for deltas (to count their tokens) and for the terminal event.
Every frame of one read gets the time that read returned: that is when those
bytes reached the client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Final

import aiohttp

from scriptgen.loadtest._records import Outcome, StreamRecord
from scriptgen.loadtest._tokens import count_tokens

_HEADERS: Final = {"Accept": "text/event-stream", "Content-Type": "application/json"}
_TERMINAL: Final = {b"completed": Outcome.COMPLETED, b"failed": Outcome.FAILED}


class SseParser:
    """Feeds SSE bytes into a StreamRecord; `feed` returns True at the terminal event."""

    def __init__(self, record: StreamRecord, on_first_event: Callable[[], None]) -> None:
        self._record = record
        self._on_first_event = on_first_event
        self._buffer = b""

    def feed(self, chunk: bytes, now: float) -> bool:
        if b"\r" in chunk:
            # The gateway ends lines with \n; other servers may use \r\n.
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        frames = (self._buffer + chunk).split(b"\n\n")
        self._buffer = frames.pop()
        return any(self._frame(frame, now) for frame in frames)

    def _frame(self, frame: bytes, now: float) -> bool:
        record = self._record
        event = b"message"
        data: bytes | None = None
        has_id = False
        for line in frame.split(b"\n"):
            if line.startswith(b"data:"):
                value = line[6:] if line.startswith(b"data: ") else line[5:]
                data = value if data is None else data + b"\n" + value
            elif line.startswith(b"event:"):
                event = line[6:].strip()
            elif line.startswith(b"id:"):
                has_id = True
        if data is None:
            # `retry:`, a gateway ping, or a core heartbeat (`id:` + `: ping`): no event.
            if has_id:
                record.heartbeats += 1
            return False
        record.events += 1
        if record.first_event is None:
            record.first_event = now
            self._on_first_event()
        if event == b"delta":
            tokens = count_tokens(json.loads(data)["textDelta"]["text"])
            if record.first_token is None:
                record.first_token = now
            record.tokens += tokens
            record.delta_times.append(now)
            record.delta_tokens.append(tokens)
            return False
        if event == b"stage" and b"STAGE_WRITE" in data and record.write_started is None:
            record.write_started = now
            return False
        if event == b"cancelled":
            record.outcome = Outcome.CANCELLED
            record.error = "cancelled event"
            return True
        outcome = _TERMINAL.get(event)
        if outcome is None:
            return False
        record.outcome = outcome
        payload = json.loads(data)
        if outcome is Outcome.COMPLETED:
            episode = payload.get("completed", {}).get("episode", {})
            record.episode = str(episode.get("name", ""))
            record.episode_tokens = count_tokens(str(episode.get("script", "")))
        else:
            record.error = f"failed event {_status_name(payload)}"
        return True


def _status_name(payload: dict[str, Any]) -> str:
    status = payload.get("failed", {}).get("status", {})
    code = status.get("code", 2)
    return _CODE_NAMES.get(int(code), str(code)) if isinstance(code, int | str) else "UNKNOWN"


_CODE_NAMES: Final = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


async def run_sse_stream(
    session: aiohttp.ClientSession,
    base_url: str,
    record: StreamRecord,
    body: bytes,
    on_first_event: Callable[[], None],
) -> None:
    """Start one job with `Accept: text/event-stream` and read it to its end into `record`."""
    url = f"{base_url}/v1/{record.project}/generations"
    parser = SseParser(record, on_first_event)
    record.began = time.monotonic()
    try:
        # `sent` is stamped by `sent_trace` when the body goes out.
        async with session.post(
            url, data=body, headers=_HEADERS, trace_request_ctx=record
        ) as response:
            record.headers = time.monotonic()
            if response.status != 200:
                record.error = f"http {response.status}{await _error_status(response)}"
                return
            async for chunk in response.content.iter_any():
                if parser.feed(chunk, time.monotonic()):
                    return
            record.error = "ended without a terminal event"
    except aiohttp.ClientResponseError as error:
        record.error = f"http {error.status}"
    except (aiohttp.ClientError, OSError) as error:
        record.error = f"connection {type(error).__name__}"
    finally:
        record.ended = time.monotonic()
        if record.sent is None:
            record.sent = record.began  # it never went out: its error counts from the start


def _stamp(moment: str) -> Callable[[aiohttp.ClientSession, SimpleNamespace, object], Any]:
    """A trace callback that stamps the request's StreamRecord `moment`, the first time."""

    async def stamp(session: aiohttp.ClientSession, context: SimpleNamespace, _: object) -> None:
        record = context.trace_request_ctx
        if isinstance(record, StreamRecord) and getattr(record, moment) is None:
            setattr(record, moment, time.monotonic())

    return stamp


def sent_trace() -> aiohttp.TraceConfig:
    """Stamps a stream's `sent` when its request body is handed to the connection.

    A burst's requests are prepared one after another in the tool's one loop, and
    on Python 3.11 aiohttp writes a body in a task of its own, so the bytes go out
    one or two loop turns after the request began: that wait is the tool's, not the
    server's. The connection's own time, which a server's full accept queue would
    stretch, is stamped too and reported apart.
    """

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(_stamp("sent"))
    trace.on_connection_create_start.append(_stamp("connecting"))
    trace.on_connection_create_end.append(_stamp("connected"))
    return trace


async def _error_status(response: aiohttp.ClientResponse) -> str:
    try:
        document = json.loads(await response.content.read(65536))
        return f" {document['error']['status']}"
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return ""
