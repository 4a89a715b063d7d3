"""The load tool's CPU per SSE stream: its own client against aiohttp's, on one server.

    .venv/bin/python scripts/sse_client_costs.py [--streams 500] [--runs 5]

A server in its own process (aiohttp, as the gateway) answers every POST with an
SSE stream of two events 0.2 s apart. This process opens `streams` streams at
once and reads each to its terminal event, on uvloop, first through aiohttp's
client session (what the load tool used before session 16), then through the
tool's own client (`scriptgen.loadtest._sse.run_sse_stream`), alternating; each
line prints the median (and every run) of this process's CPU microseconds per
stream. Run it on a quiet machine: every figure is CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop
from aiohttp import web
from scriptgen.loadtest._lifetime import parent_death_signal
from scriptgen.loadtest._records import StreamRecord
from scriptgen.loadtest._sse import SseParser, SseTarget, resolve, run_sse_stream

_BODY = b'{"title": "Load 1"}'
_HEADERS = {"Accept": "text/event-stream", "Content-Type": "application/json"}
_FIRST = b'event: stage\ndata: {"stage": "STAGE_PLAN"}\n\n'
_LAST = b'event: completed\ndata: {"completed": {"episode": {"name": "e", "script": "x"}}}\n\n'


async def _answer(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_FIRST)
    await asyncio.sleep(0.2)
    await response.write(_LAST)
    await response.write_eof()
    return response


def serve(port: int) -> None:
    """The server process: answers until it is terminated."""
    app = web.Application()
    app.router.add_post("/v1/projects/p1/generations", _answer)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, backlog=4096)


async def _aiohttp_streams(base: str, streams: int) -> None:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            record = StreamRecord(0, "projects/p1")
            parser = SseParser(record, lambda: None)
            url = f"{base}/v1/projects/p1/generations"
            async with session.post(url, data=_BODY, headers=_HEADERS) as response:
                async for chunk in response.content.iter_any():
                    if parser.feed(chunk, time.monotonic()):
                        return

        await asyncio.gather(*(one() for _ in range(streams)))


async def _tool_streams(target: SseTarget, streams: int) -> None:
    async def one() -> None:
        await run_sse_stream(target, StreamRecord(0, "projects/p1"), _BODY, lambda: None)

    await asyncio.gather(*(one() for _ in range(streams)))


async def _measure(port: int, streams: int, runs: int) -> None:
    base = f"http://127.0.0.1:{port}"
    target = await resolve("127.0.0.1", port)
    clients: dict[str, Callable[[], Awaitable[None]]] = {
        "aiohttp client session": lambda: _aiohttp_streams(base, streams),
        "the load tool's client": lambda: _tool_streams(target, streams),
    }
    figures: dict[str, list[float]] = {name: [] for name in clients}
    for run in clients.values():
        await run()  # warm: imports, first connections
    gc.collect()
    gc.freeze()
    for _ in range(runs):
        for name, run in clients.items():
            gc.collect()
            cpu = time.process_time()
            await run()
            figures[name].append((time.process_time() - cpu) / streams * 1e6)
    for name, values in figures.items():
        shown = " ".join(f"{value:.0f}" for value in values)
        print(f"{name:<24} µs CPU per stream: median {statistics.median(values):.0f} ({shown})")


def _wait_for(port: int, server: subprocess.Popen[bytes]) -> None:
    """Until the server takes connections (it exits: raise)."""
    deadline = time.monotonic() + 30
    while server.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the SSE server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(prog="sse_client_costs.py")
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(port)],
        preexec_fn=parent_death_signal(),
    )
    try:
        _wait_for(port, server)
        uvloop.run(_measure(port, args.streams, args.runs))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
