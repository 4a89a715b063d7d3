"""What an open, idle gRPC server stream costs by itself, client and server side.

The floor under BENCHMARKS.md's idle-stream target: a bare grpc.aio server whose
streaming handler sends initial metadata and one message, then waits; a bare
grpc.aio client that opens N such streams, each read by one task (as the gateway
reads a job's stream). Each side reports its resident memory per open stream
(RSS with all N open minus RSS before, divided by N). Channel options can be
compared, e.g. client-side retries off:

    .venv/bin/python scripts/grpc_call_memory.py --streams 1000
    .venv/bin/python scripts/grpc_call_memory.py --streams 1000 \
        --client-option grpc.enable_retries=0

Loopback only; both processes end by themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc import aio
from scriptgen.loadtest._lifetime import parent_death_signal

_METHOD = "/scriptgen.memory.Probe/Hold"


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _options(pairs: list[str]) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = []
    for pair in pairs:
        key, _, value = pair.partition("=")
        options.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return options


async def _serve(streams: int, hold_seconds: float) -> None:
    server = aio.server()

    async def hold(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> object:
        await context.send_initial_metadata((("probe", "1"),))
        yield b"x"
        await asyncio.sleep(hold_seconds)

    handler = grpc.method_handlers_generic_handler(
        "scriptgen.memory.Probe",
        {"Hold": grpc.unary_stream_rpc_method_handler(hold)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    # The client says when its warm-up call is done and when all its streams are open.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    before = _rss()
    await loop.run_in_executor(None, sys.stdin.readline)
    print(json.dumps({"server_kib_per_stream": (_rss() - before) / 1024 / streams}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the client cancelled its streams
    await server.stop(grace=1)


async def _client(
    port: int,
    streams: int,
    options: list[tuple[str, int | str]],
    tell_server: Callable[[], None],
) -> float:
    async with aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        method: aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(_METHOD)
        warm = method(b"")
        await warm.read()
        warm.cancel()
        await asyncio.sleep(0.5)
        tell_server()  # the server's "before" reading
        await asyncio.sleep(0.2)
        before = _rss()
        calls = [method(b"") for _ in range(streams)]

        async def pump(call: aio.UnaryStreamCall[bytes, bytes]) -> None:
            async for _ in call:
                pass

        readers = [asyncio.create_task(pump(call)) for call in calls]
        await asyncio.sleep(3)
        per_stream = (_rss() - before) / 1024 / streams
        tell_server()  # the server's reading with every stream open
        for call in calls:
            call.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.sleep(0.5)
        tell_server()  # every stream is cancelled: the server may stop
        return per_stream


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument(
        "--client-option", action="append", default=[], help="a channel option, KEY=VALUE"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.streams <= 5000:
        parser.error("--streams must be 1..5000")
    if args.serve:
        asyncio.run(_serve(args.streams, hold_seconds=60))
        return 0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", f"--streams={args.streams}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=parent_death_signal(),
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        port = json.loads(server.stdout.readline())["port"]

        def tell_server() -> None:
            assert server.stdin is not None
            server.stdin.write("\n")
            server.stdin.flush()

        client = asyncio.run(_client(port, args.streams, _options(args.client_option), tell_server))
        reported = json.loads(server.stdout.readline())
    finally:
        if server.poll() is None:
            server.wait(timeout=30)
    print(
        json.dumps(
            {
                "streams": args.streams,
                "client_options": args.client_option,
                "client_kib_per_stream": round(client, 1),
                "server_kib_per_stream": round(reported["server_kib_per_stream"], 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
