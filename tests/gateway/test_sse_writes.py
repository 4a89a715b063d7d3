"""A stream's opening leaves in one socket write: headers, `retry:` and the first events.

Each write is a system call that may wake the client. The gateway here is a real server on
a real core; the test counts the writes its connection's transport is given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import create_app, state
from tests.gateway.conftest import gateway_config


class _CountingTransport:
    """Passes every write on to the real transport and keeps what each one carried."""

    def __init__(self, transport: Any) -> None:
        self.inner = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        data = b"".join(chunks)
        self.writes.append(data)
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _counting_app(
    core_target: str, streams: list[list[bytes]], **overrides: Any
) -> web.Application:
    """A gateway app whose SSE answers' writes are kept in `streams`, one list per stream."""

    @web.middleware
    async def counting(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        protocol: Any = request.protocol
        counted = _CountingTransport(protocol.transport)
        protocol.transport = counted
        try:
            return await handler(request)
        finally:
            protocol.transport = counted.inner
            if request.method == "POST" and request.path.endswith("/generations"):
                streams.append(counted.writes)

    app = create_app(gateway_config(core_target, **overrides))
    app.middlewares.append(counting)
    return app


async def _stream(app: web.Application) -> bytes:
    async with TestClient(TestServer(app)) as client:
        await app[state.READINESS].wait_for(True)
        created = await client.post("/v1/projects", json={"title": "Writes"})
        project = (await created.json())["name"]
        response = await client.post(
            f"/v1/{project}/generations",
            json={"title": "Pilot"},
            headers={"Accept": "text/event-stream"},
        )
        assert response.status == 200
        return await response.read()


async def test_headers_retry_and_the_first_event_go_out_in_one_write(core_target: str) -> None:
    streams: list[list[bytes]] = []
    body = await _stream(_counting_app(core_target, streams))
    assert b"event: completed" in body
    [writes] = streams
    first = writes[0]
    assert first.startswith(b"HTTP/1.1 200 OK\r\n"), first[:40]
    head, _, rest = first.partition(b"\r\n\r\n")
    assert b"text/event-stream" in head
    # Chunked: the first chunk holds `retry:` and then the job's first event(s).
    assert b"retry: 1500\n\n" in rest and b"\nevent: " in rest.split(b"retry: 1500\n\n", 1)[1]


async def test_with_no_event_in_hand_headers_and_retry_go_out_at_once(core_target: str) -> None:
    # No wait for a first event: the core cannot have answered yet, and the opening must not
    # be held back until it does.
    streams: list[list[bytes]] = []
    body = await _stream(_counting_app(core_target, streams, first_event_wait_seconds=0.0))
    assert b"event: completed" in body
    [writes] = streams
    head, _, rest = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"text/event-stream" in head
    assert rest == b"d\r\nretry: 1500\n\n\r\n"  # the retry frame, as one chunk, alone
    assert b"event: " in writes[1]
