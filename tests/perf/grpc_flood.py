"""A grpc.aio server flooded with completions on a slow loop, in a process of its own.

Run by `test_grpc_wakeups.py`: `python -m tests.perf.grpc_flood [--drain] [--uvloop]`. The
server streams MESSAGES small messages on each of STREAMS calls of a client in
a second process, while a callback holds every turn of the server's loop for a
millisecond, so completions come faster than the loop turns. A thread samples
the bytes waiting on grpc.aio's wake-up socket pair; the result is one JSON
line: the peak, the messages the client received, the seconds it took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time

import grpc
from grpc import aio
from scriptgen._grpc_wakeups import drain_grpc_wakeups, is_unix_stream, pending_bytes, socket_fds

STREAMS = 100
MESSAGES = 30
_METHOD = "/scriptgen.flood.Flood/Stream"


async def _serve(drain: bool) -> dict[str, object]:
    before = socket_fds()
    wakeups = drain_grpc_wakeups() if drain else None
    if drain and wakeups is None:
        raise SystemExit("the wake-up socket pair was not found")
    server = aio.server()

    async def stream(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> object:
        for _ in range(MESSAGES):
            yield b"x" * 20

    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "scriptgen.flood.Flood", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # grpc's own pair (our duplicates came later and are not counted twice: same sockets).
    pair = sorted(fd for fd in socket_fds() - before if is_unix_stream(fd))[:2]
    peak = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max([peak, *(pending_bytes(fd) for fd in pair)])
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    loop = asyncio.get_running_loop()

    def slow_turn() -> None:
        time.sleep(0.001)
        loop.call_soon(slow_turn)

    loop.call_soon(slow_turn)
    started = time.monotonic()
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.perf.grpc_flood",
        f"--client={port}",
        stdout=subprocess.PIPE,
    )
    output, _ = await client.communicate()
    seconds = time.monotonic() - started
    sampling.set()
    sampler.join()
    await server.stop(None)
    if wakeups is not None:
        wakeups.close()
    return {
        "peak_pending": peak,
        "received": int(output or b"0"),
        "seconds": round(seconds, 2),
    }


async def _client(port: int) -> int:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        method: aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(_METHOD)

        async def one() -> int:
            return sum([1 async for _ in method(b"")])

        counts = await asyncio.gather(*(one() for _ in range(STREAMS)), return_exceptions=True)
    return sum(count for count in counts if isinstance(count, int))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drain", action="store_true")
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop, as the core does")
    parser.add_argument("--client", type=int, default=0)
    args = parser.parse_args()
    if args.client:
        print(asyncio.run(_client(args.client)))
        return
    if args.uvloop:
        import uvloop

        print(json.dumps(uvloop.run(_serve(args.drain))))
    else:
        print(json.dumps(asyncio.run(_serve(args.drain))))


if __name__ == "__main__":
    main()
