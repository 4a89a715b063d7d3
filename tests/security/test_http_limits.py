"""Requests over aiohttp's line limits: a JSON 400 like every gateway error, quoting nothing
of the input, and one log line without a traceback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway import GatewayServer
from gateway.http_errors import MAX_HEADERS, MAX_LINE_BYTES

MARKER = b"zq"  # repeated to fill the oversized line; must never come back


async def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer: status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _long(size: int) -> bytes:
    return (MARKER * size)[:size]


OVERSIZED = {
    "url": b"GET /v1/projects?q=" + _long(MAX_LINE_BYTES) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header value": (
        b"GET /v1/projects HTTP/1.1\r\nHost: x\r\nX-Note: "
        + _long(MAX_LINE_BYTES + 1)
        + b"\r\n\r\n"
    ),
    "header name": (
        b"GET /v1/projects HTTP/1.1\r\nHost: x\r\nX-" + _long(MAX_LINE_BYTES) + b": 1\r\n\r\n"
    ),
    "header count": (
        b"GET /v1/projects HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-" + MARKER + b"%d: 1\r\n" % i for i in range(MAX_HEADERS))
        + b"\r\n"
    ),
}


@pytest.mark.parametrize("what", list(OVERSIZED))
async def test_oversized_requests_get_a_json_400_that_echoes_nothing(
    what: str,
    secure_gateway: GatewayServer,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    status, headers, body = await _exchange(secure_gateway.port, OVERSIZED[what])
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert MARKER not in body
    error = json.loads(body)["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["details"][0]["reason"] == "MALFORMED_REQUEST"
    assert str(MAX_HEADERS if what == "header count" else MAX_LINE_BYTES) in error["message"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"

    lines = log_lines()
    logged = json.dumps(lines)
    assert MARKER.decode() not in logged and "Traceback" not in logged
    refused = [line for line in lines if line["logger"] == "gateway.http_errors"]
    assert len(refused) == 1 and refused[0]["level"] == "INFO"
    assert "exception" not in refused[0]
    assert not [line for line in lines if line["logger"].startswith("aiohttp")]


async def test_a_url_within_the_limit_reaches_the_routes(secure_gateway: GatewayServer) -> None:
    path = b"/v1/nowhere/" + _long(MAX_LINE_BYTES - 100)
    status, _, body = await _exchange(
        secure_gateway.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 404
    assert json.loads(body)["error"]["details"][0]["reason"] == "ROUTE_NOT_FOUND"
