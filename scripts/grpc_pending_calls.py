"""What becomes of gRPC calls a busy grpc.aio server does not take in time.

grpc.aio's server asks gRPC for one new call at a time and takes it on a turn of
its event loop, so a loop whose turns are long takes few new calls a second. The
calls it has not taken wait in gRPC's own queue, where the application cannot see
them; one that waits longer than `grpc.server_max_unrequested_time_in_server`
(30 s by default) is cancelled by gRPC: its caller gets CANCELLED. This is what
ends the naive relay's streams in BENCHMARKS.md's `sse-ramp-1000` (session 37).

A bare grpc.aio server (the standard health service) in this process, its loop
kept busy `--busy-ms` per turn by a task; a client in its own process sends
`--calls` calls at once and reports, per status code, how many ended and when
(seconds after they were sent):

    .venv/bin/python scripts/grpc_pending_calls.py --calls 300 --busy-ms 20 \
        --unrequested-seconds 2

Loopback only; both processes end by themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence

from grpc import aio
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from scriptgen.cli._args import at_least_one
from scriptgen.loadtest._lifetime import parent_death_signal

#: The client: reads the server's target from stdin, sends the calls at once, prints one
#: JSON line: each status code -> the seconds at which its calls ended.
_CLIENT = """
import asyncio, collections, json, sys, time
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

async def main(target, calls):
    async with aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        sent = time.monotonic()

        async def one():
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=600)
                code = "OK"
            except aio.AioRpcError as error:
                code = error.code().name
            return code, time.monotonic() - sent

        ended = collections.defaultdict(list)
        for code, seconds in await asyncio.gather(*(one() for _ in range(calls))):
            ended[code].append(seconds)
        print(json.dumps(ended), flush=True)

asyncio.run(main(sys.stdin.readline().strip(), int(sys.argv[1])))
"""


async def _keep_busy(seconds: float) -> None:
    """Hold the loop `seconds` per turn, as a server whose CPU is spent does."""
    while True:
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            pass
        await asyncio.sleep(0)


async def pending_calls(
    calls: int, busy_seconds: float, unrequested_seconds: int | None
) -> dict[str, list[float]]:
    """Each status code's calls, as the seconds after sending at which each ended."""
    options: Sequence[tuple[str, int]] = []
    if unrequested_seconds is not None:
        options = [("grpc.server_max_unrequested_time_in_server", unrequested_seconds)]
    # The client first: a fork while gRPC's threads run would skip gRPC's fork handlers.
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLIENT,
        str(calls),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=parent_death_signal(),
    )
    server = aio.server(options=options)
    busy: asyncio.Task[None] | None = None
    try:
        health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        busy = asyncio.create_task(_keep_busy(busy_seconds))
        output, _ = await client.communicate(f"127.0.0.1:{port}\n".encode())
    finally:
        if busy is not None:
            busy.cancel()
        await server.stop(None)
        if client.returncode is None:  # the server failed to start, or this was cancelled
            client.kill()
            await client.wait()
    if client.returncode != 0:
        raise RuntimeError(f"the client failed with status {client.returncode}")
    ended: dict[str, list[float]] = json.loads(output)
    return ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=at_least_one, default=300)
    parser.add_argument("--busy-ms", type=at_least_one, default=20)
    parser.add_argument(
        "--unrequested-seconds",
        type=at_least_one,
        default=None,
        help="grpc.server_max_unrequested_time_in_server (gRPC's default: 30)",
    )
    arguments = parser.parse_args()
    ended = asyncio.run(
        pending_calls(arguments.calls, arguments.busy_ms / 1000, arguments.unrequested_seconds)
    )
    for code, seconds in sorted(ended.items()):
        print(
            f"{code:<18} {len(seconds):5d} calls, ended {min(seconds):6.2f}"
            f" to {max(seconds):6.2f} s after they were sent"
        )


if __name__ == "__main__":
    main()
