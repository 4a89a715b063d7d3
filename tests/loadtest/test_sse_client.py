"""The load tool's SSE client: what it stamps and how it names each way a stream ends.

Against a real gateway and core, and against small real TCP servers on port 0 that
answer with fixed bytes, for the endings a gateway does not produce on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from scriptgen import Client
from scriptgen.loadtest import _sse
from scriptgen.loadtest._records import Outcome, StreamRecord
from scriptgen.loadtest._sse import SseTarget, resolve, run_sse_stream

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@asynccontextmanager
async def _answering(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> AsyncIterator[SseTarget]:
    """A TCP server on a free loopback port; `answer` writes each connection's reply."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            result = answer(reader, writer)
            if asyncio.iscoroutine(result):
                await result
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield await resolve("127.0.0.1", port)
    finally:
        server.close()
        await server.wait_closed()


async def _replied(reply: bytes) -> StreamRecord:
    """A stream's record, read from a server that writes `reply` and closes."""

    def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)

    async with _answering(answer) as target:
        return await _run(target)


async def _run(target: SseTarget, project: str = "projects/p1") -> StreamRecord:
    record = StreamRecord(0, project)
    await asyncio.wait_for(run_sse_stream(target, record, b'{"title": "T"}', lambda: None), 30)
    return record


async def test_a_stream_through_a_real_gateway_is_stamped_in_order(
    core_target: str, gateway_url: str
) -> None:
    async with Client(core_target) as client:
        project = await client.create_project(title="Timing")
    opened: list[int] = []
    host, port = gateway_url.removeprefix("http://").split(":")
    record = StreamRecord(0, project.name)
    target = await resolve(host, int(port))
    await asyncio.wait_for(
        run_sse_stream(target, record, b'{"title": "Timed"}', lambda: opened.append(1)), 60
    )
    assert record.outcome is Outcome.COMPLETED, record.error
    assert record.error == ""
    assert opened == [1]
    assert record.began is not None and record.connecting == record.began
    assert record.connected is not None and record.sent is not None
    assert record.headers is not None and record.first_event is not None
    assert record.first_token is not None and record.ended is not None
    assert record.began <= record.connected <= record.sent
    assert record.sent <= record.headers <= record.first_event <= record.first_token
    assert record.first_token <= record.ended
    # The deltas add up to the saved script, as the report's consistency check needs.
    assert record.tokens > 0 and record.tokens == record.episode_tokens
    assert record.episode.startswith(project.name + "/episodes/")


async def test_an_error_answer_is_named_by_its_status(core_target: str, gateway_url: str) -> None:
    host, port = gateway_url.removeprefix("http://").split(":")
    record = await _run(await resolve(host, int(port)), "projects/missing")
    assert record.outcome is Outcome.ERROR
    assert record.error == "http 404 NOT_FOUND"
    assert record.first_event is None


async def test_a_refused_connection_counts_its_error_from_its_start() -> None:
    # Nothing listens on port 9 of loopback: the connection is refused.
    record = await _run(await resolve("127.0.0.1", 9))
    assert record.error == "connection ConnectionRefusedError"
    assert record.sent == record.began
    assert record.connected is None and record.headers is None


async def test_a_connection_cut_mid_stream_is_an_error_after_its_events() -> None:
    record = await _replied(_OK + _chunk(b'event: stage\ndata: {"stage": "STAGE_PLAN"}\n\n'))
    assert record.outcome is Outcome.ERROR
    assert record.error == "connection closed"
    assert record.events == 1 and record.first_event is not None


async def test_an_answer_that_ends_without_a_terminal_event_says_so() -> None:
    record = await _replied(_OK + _chunk(b": ping\n\n") + b"0\r\n\r\n")
    assert record.error == "ended without a terminal event"
    assert record.events == 0


async def test_a_delta_that_is_not_json_is_a_protocol_error_not_a_crash() -> None:
    record = await _replied(_OK + _chunk(b"event: delta\ndata: {not json\n\n"))
    assert record.outcome is Outcome.ERROR
    assert record.error == "protocol JSONDecodeError"


async def test_an_error_answer_read_to_the_close_is_named_by_its_status() -> None:
    # No length and no chunking: the body runs to the close of the connection.
    record = await _replied(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n"
        b'{"error": {"status": "UNAVAILABLE"}}'
    )
    assert record.error == "http 503 UNAVAILABLE"


async def test_frames_of_one_read_share_its_time_and_the_terminal_event_ends_the_stream() -> None:
    frames = (
        b'event: stage\ndata: {"stage": "STAGE_WRITE"}\n\n'
        b'event: delta\ndata: {"textDelta": {"text": "INT. ROOM - NIGHT"}}\n\n'
    )
    done = b'event: completed\ndata: {"completed": {"episode": {"name": "e", "script": "x"}}}\n\n'

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_OK + _chunk(frames))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(_chunk(done))
        await writer.drain()
        await asyncio.sleep(5)  # the client ends at the terminal event, not at the close

    async with _answering(answer) as target:
        started = time.monotonic()
        record = await _run(target)
    assert record.outcome is Outcome.COMPLETED, record.error
    assert record.ended is not None and record.ended - started < 2
    assert record.write_started == record.first_event == record.first_token
    assert record.first_token is not None and record.ended - record.first_token >= 0.15
    assert list(record.delta_tokens) == [4]  # "INT. ", "ROOM ", "- ", "NIGHT"
    assert record.episode == "e"


async def test_a_stream_cancelled_at_the_deadline_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_OK + _chunk(b'event: stage\ndata: {"stage": "STAGE_PLAN"}\n\n'))
        await writer.drain()
        await reader.read()  # returns when the client closes its end
        closed.set()

    async with _answering(hold) as target:
        record = StreamRecord(0, "projects/p1")
        opened = asyncio.Event()
        task = asyncio.ensure_future(run_sse_stream(target, record, b"{}", opened.set))
        await asyncio.wait_for(opened.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.wait_for(closed.wait(), 5)
    assert record.ended is not None and record.events == 1


async def test_the_next_address_is_tried_when_one_refuses() -> None:
    # `localhost` may look up as ::1 first while the gateway listens on 127.0.0.1 only.
    def ends(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_OK + _chunk(b'event: failed\ndata: {"failed": {"status": {"code": 8}}}\n\n'))

    async with _answering(ends) as listening:
        [(family, address)] = listening.addresses
        refusing = (family, ("127.0.0.1", 9))  # nothing listens on port 9
        record = await _run(SseTarget((refusing, (family, address)), listening.host_header))
    assert record.outcome is Outcome.FAILED
    assert record.error == "failed event RESOURCE_EXHAUSTED"


async def test_a_lookup_gives_every_address_once() -> None:
    target = await resolve("localhost", 8080)
    assert target.host_header == "localhost:8080"
    assert target.addresses and len(set(target.addresses)) == len(target.addresses)
    assert {address[0] for _, address in target.addresses} <= {"127.0.0.1", "::1"}
    assert (await resolve("::1", 8080)).host_header == "[::1]:8080"


async def test_an_interim_answer_is_skipped_for_the_real_one() -> None:
    record = await _replied(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        + _OK
        + _chunk(b'event: completed\ndata: {"completed": {}}\n\n')
    )
    assert record.outcome is Outcome.COMPLETED, record.error


async def test_an_upgrade_answer_is_an_error_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    record = await _replied(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\n\x81\x00"
    )
    assert record.outcome is Outcome.ERROR
    assert record.error == "http 101"
    # Nothing escaped the connection's callbacks for the loop to report.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_connection_that_does_not_open_in_time_is_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A listener whose accept queue is full leaves further connects waiting for their SYN.
    monkeypatch.setattr(_sse, "CONNECT_TIMEOUT_SECONDS", 0.3)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(0)
    held: list[socket.socket] = []
    try:
        port = blocker.getsockname()[1]
        for _ in range(8):  # fill the accept queue (never accepted)
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            held.append(filler)
        record = await _run(await resolve("127.0.0.1", port))
    finally:
        for filler in held:
            filler.close()
        blocker.close()
    assert record.error == "connection timeout"
    assert record.sent == record.began and record.connected is None
