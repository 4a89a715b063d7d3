"""One generation through the gateway as Server-Sent Events, on a lean client.

The tool runs on the box it measures, so each stream costs it little: its
request is written as bytes the moment its connection opens, the answer is
parsed by llhttp (`httptools`, uvicorn's parser) in the connection's own
callbacks, and the SSE parser splits the bytes on blank lines, looks at
`event:`/`data:` lines, and decodes JSON only for deltas (to count their
tokens) and for the terminal event. Every frame of one read gets the time that
read came in: that is when those bytes reached the client.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

import httptools

from scriptgen.loadtest._records import Outcome, StreamRecord
from scriptgen.loadtest._tokens import count_tokens

_TERMINAL: Final = {b"completed": Outcome.COMPLETED, b"failed": Outcome.FAILED}


class SseParser:
    """Feeds SSE bytes into a StreamRecord; `feed` returns True at the terminal event."""

    def __init__(self, record: StreamRecord, on_first_event: Callable[[], None]) -> None:
        self._record = record
        self._on_first_event = on_first_event
        self._buffer = b""
        self._held_cr = False

    def feed(self, chunk: bytes, now: float) -> bool:
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if b"\r" in chunk:
            # The gateway ends lines with \n; other servers may use \r\n. A CR that ends a
            # read may be the first half of a CRLF: it waits for the next read.
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._held_cr = True
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


#: How long a stream's TCP connection may take to open.
CONNECT_TIMEOUT_SECONDS = 30.0
#: The most of an error answer's body kept to name its status.
_ERROR_BODY_BYTES = 65536


@dataclass(frozen=True, slots=True)
class SseTarget:
    """A gateway's addresses, looked up once per client process, and its `Host` header."""

    #: (family, socket address) in the order the lookup gave them; each is tried in turn.
    addresses: tuple[tuple[int, tuple[Any, ...]], ...]
    host_header: str

    def request(self, project: str, body: bytes) -> bytes:
        """The bytes of one stream's request: POST …/generations asking for events."""
        head = (
            f"POST /v1/{project}/generations HTTP/1.1\r\n"
            f"Host: {self.host_header}\r\n"
            "Accept: text/event-stream\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("ascii") + body


async def resolve(host: str, port: int) -> SseTarget:
    """`host`:`port` looked up once (a name would otherwise be looked up per stream);
    raises OSError when it has no address."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not found:
        raise OSError(f"{host} has no address")
    shown = f"[{host}]" if ":" in host else host
    addresses = tuple(dict.fromkeys((family, address) for family, _, _, _, address in found))
    return SseTarget(addresses, f"{shown}:{port}")


class _SseConnection(asyncio.Protocol):
    """One stream's connection: its request written once it opens, its answer parsed by
    llhttp (`httptools`) as the bytes come, every frame of one read stamped with the time
    that read came in. `done` resolves at the terminal event, the end of the answer, or a
    lost connection, with `record` filled in."""

    def __init__(self, record: StreamRecord, parser: SseParser, request: bytes) -> None:
        self._record = record
        self._sse = parser
        self._request = request
        self._http = httptools.HttpResponseParser(self)
        self._status = 0
        self._error_body = bytearray()
        self._now = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        record = self._record
        record.connected = time.monotonic()
        # A stream connection (uvloop's transports are not asyncio's classes).
        cast(asyncio.Transport, transport).write(self._request)
        record.sent = time.monotonic()

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self._now = time.monotonic()
        try:
            self._http.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._end(f"http {self._status}")  # llhttp stops at an upgrade: not an SSE answer
        except httptools.HttpParserError as error:
            # A callback's own error (a delta that is not JSON) is named, not the parser's.
            callback = isinstance(error, httptools.HttpParserCallbackError)
            cause = error.__context__ if callback else None
            self._end(f"protocol {type(cause or error).__name__}")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._status and self._status != 200:
            self.on_message_complete()  # an error answer whose body ran to the close
        self._end(f"connection {type(exc).__name__}" if exc else "connection closed")

    def _end(self, error: str) -> None:
        if not self.done.done():
            self._record.error = error
            self.done.set_result(None)

    # httptools callbacks.

    def on_headers_complete(self) -> None:
        self._record.headers = self._now
        self._status = self._http.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.done.done():
            return
        if self._status != 200:
            if len(self._error_body) < _ERROR_BODY_BYTES:
                self._error_body += body
        elif self._sse.feed(body, self._now):
            self.done.set_result(None)  # the terminal event: the parser set the outcome

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200 and self._status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._status = 0
            self._error_body.clear()
            return
        if self._status != 200:
            self._end(f"http {self._status}{_error_status(bytes(self._error_body))}")
        else:
            self._end("ended without a terminal event")


async def run_sse_stream(
    target: SseTarget,
    record: StreamRecord,
    body: bytes,
    on_first_event: Callable[[], None],
) -> None:
    """Start one job with `Accept: text/event-stream` on a connection of its own and read it
    to its end into `record`.

    A load tool spends its own CPU on the box it measures: through aiohttp's client a
    stream cost the tool ~0.4 ms of CPU to open and read, here ~0.15 ms
    (`scripts/sse_client_costs.py`; BENCHMARKS.md, session 16). `sent` is when the
    request's bytes were handed to the connection, as soon as it opened. The target's
    addresses are tried in turn (`localhost` may give `::1` first to a gateway on
    127.0.0.1); errors are named by their exception, e.g. `connection
    ConnectionRefusedError`, `connection closed`, `connection timeout`.
    """
    loop = asyncio.get_running_loop()
    request = target.request(record.project, body)
    connection = _SseConnection(record, SseParser(record, on_first_event), request)
    transport: asyncio.BaseTransport | None = None
    record.began = record.connecting = time.monotonic()
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                transport = await _connect(loop, target, connection)
        except TimeoutError:
            record.error = "connection timeout"
            return
        except OSError as error:
            record.error = f"connection {type(error).__name__}"
            return
        await connection.done
    finally:
        if transport is not None:
            transport.close()
        record.ended = time.monotonic()
        if record.sent is None:
            record.sent = record.began  # it never went out: its error counts from the start


async def _connect(
    loop: asyncio.AbstractEventLoop, target: SseTarget, connection: _SseConnection
) -> asyncio.BaseTransport:
    """A connection to the first of the target's addresses that takes it; the last error."""
    error: OSError = OSError(f"{target.host_header} has no address")
    for family, address in target.addresses:
        try:
            transport, _ = await loop.create_connection(
                lambda: connection, *address[:2], family=family
            )
        except OSError as refused:
            error = refused
        else:
            return transport
    raise error


def _error_status(body: bytes) -> str:
    try:
        document = json.loads(body)
        return f" {document['error']['status']}"
    except (ValueError, KeyError, TypeError):
        return ""
