"""Item 5: slow SSE readers (one event a second) next to normal ones, real processes.

A `scriptgen server` writes at 30 tokens/s, one TextDelta per token; a `scriptgen
gateway` serves both kinds of reader. Ten slow readers each take one SSE event a
second through a small receive buffer, so the gateway's writes to them block and
their backlog stays in the gateway. Measured: the gateway's resident memory stays
within a fixed bound (the design bounds a stream's backlog by its job's event log),
the slow readers still get every event in order, and eight normal streams keep the
rate they had with no slow reader around.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.replicas.cluster import CORE_LINE, GATEWAY_LINE, Process, iter_frames, spawn, wait_ready
from tests.sharing import MACHINE

pytestmark = MACHINE

SLOW_READERS = 10
NORMAL_STREAMS = 8
SLOW_SECONDS = 10
#: Loose on purpose: a stream's backlog here is a few tens of KiB; a leak per event or
#: per second (not per job) would show as many MiB.
RSS_GROWTH_LIMIT = 24 * 1024 * 1024
SSE = {"Accept": "text/event-stream"}
ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)


@dataclass
class Servers:
    core: Process
    gateway: Process


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    core = await spawn(
        "server",
        "--grpc-address=127.0.0.1:0",
        "--metrics-address=off",
        "--auth=disabled",
        f"--data-dir={tmp_path / 'core'}",
        "--synthetic-first-token-seconds=0.05",
        "--synthetic-tokens-per-second=30",
        "--delta-window-ms=0",
        "--heartbeat-seconds=1",
        "--shutdown-grace-seconds=0.5",
        pattern=CORE_LINE,
    )
    try:
        gateway = await spawn(
            "gateway",
            f"--core-target={core.address}",
            "--http-address=127.0.0.1:0",
            "--drain-seconds=0.5",
            pattern=GATEWAY_LINE,
        )
        try:
            await wait_ready(gateway.address)
            yield Servers(core, gateway)
        finally:
            await gateway.stop()
    finally:
        await core.stop()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _normal_stream(http: httpx.AsyncClient, base: str, parent: str) -> float:
    """Characters per second of one stream, first delta to completion."""
    first = 0.0
    chars = 0
    async with http.stream(
        "POST", f"{base}v1/{parent}/generations", json={"title": "Normal"}, headers=SSE
    ) as response:
        assert response.status_code == 200
        async for frame in iter_frames(response):
            if frame.event == "delta":
                first = first or time.monotonic()
                chars += len(json.loads(frame.data)["textDelta"]["text"])
            if frame.event == "completed":
                return chars / (time.monotonic() - first)
    raise AssertionError("the stream ended without `completed`")


async def _slow_reader(base: str, parent: str, stop: asyncio.Event) -> list[int]:
    """Take one SSE event a second through a 4 KiB receive buffer; the ids seen."""
    address = urlsplit(base)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (address.hostname, address.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=8192)
    body = json.dumps({"title": "Slow"}).encode()
    writer.write(
        f"POST /v1/{parent}/generations HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Accept: text/event-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    ids: list[int] = []
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        for _ in range(SLOW_SECONDS):
            if stop.is_set():
                break
            frame = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)
            ids.extend(int(found) for found in ID.findall(frame))
            await asyncio.sleep(1)
    finally:
        writer.close()
        await writer.wait_closed()
    return ids


async def _project(http: httpx.AsyncClient, base: str) -> str:
    response = await http.post(f"{base}v1/projects", json={"title": "Slow readers"})
    assert response.status_code in (200, 201), response.text
    return str(response.json()["name"])


async def test_slow_readers_stay_bounded_and_do_not_slow_the_others(servers: Servers) -> None:
    base = servers.gateway.address
    pid = servers.gateway.child.pid
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=60)) as http:
        parent = await _project(http, base)
        baseline = await asyncio.gather(
            *(_normal_stream(http, base, parent) for _ in range(NORMAL_STREAMS))
        )
        rss_before = _rss(pid)
        stop = asyncio.Event()
        slow = [asyncio.create_task(_slow_reader(base, parent, stop)) for _ in range(SLOW_READERS)]
        await asyncio.sleep(2)  # the slow readers fall behind first
        during = await asyncio.gather(
            *(_normal_stream(http, base, parent) for _ in range(NORMAL_STREAMS))
        )
        rss_peak = _rss(pid)
        for _ in range(SLOW_SECONDS):
            if all(task.done() for task in slow):
                break
            rss_peak = max(rss_peak, _rss(pid))
            await asyncio.sleep(1)
        stop.set()
        slow_ids = await asyncio.wait_for(asyncio.gather(*slow), 30)
    growth = rss_peak - rss_before
    print(
        f"normal streams chars/s: alone {statistics.median(baseline):.1f},"
        f" beside {SLOW_READERS} slow readers {statistics.median(during):.1f};"
        f" gateway RSS {rss_before / 2**20:.1f} MiB -> peak {rss_peak / 2**20:.1f} MiB;"
        f" slow readers got {[len(ids) for ids in slow_ids]} frames"
    )
    for ids in slow_ids:
        assert ids and ids == list(range(ids[0], ids[0] + len(ids))), ids  # in order, no gap
        assert len(ids) >= SLOW_SECONDS // 2
    assert growth < RSS_GROWTH_LIMIT
    assert statistics.median(during) >= 0.8 * statistics.median(baseline)
