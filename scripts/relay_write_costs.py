"""What one grpc.aio message costs the server that writes it, by its size.

    .venv/bin/python scripts/relay_write_costs.py [--messages 2000] [--runs 3]
        [--sizes 200,5000,20000,100000]

A grpc.aio server in a child process (uvloop, as the core runs) writes `messages`
messages of each size on one server-streaming call, back to back, to a client in
this process, and measures its own CPU time (all threads) over those writes. Bytes
pass both ends' serializers unchanged, as the core's Relay frames do
(`server/services/relay.py`). Prints, per size, each run and the median in CPU
µs per message written.

This is the figure behind the Relay cadence (`scriptgen._relay_cadence`) and the
gateway's one Relay call to a core of one address (`GatewayConfig.relay_calls`): a
message costs its writer ~40-90 µs here, most of it whatever it holds, so Relay
calls cost both ends by the messages they write (each call up to one per 5 ms)
more than by the bytes in them (BENCHMARKS.md, session 25). Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import resource
import statistics
import struct
import sys
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

import grpc
import uvloop
from grpc import aio
from scriptgen.cli._args import at_least_one

_METHOD = "/scriptgen.costs.Writes/Write"
_REQUEST = struct.Struct("!II")  # messages, size
_FIGURE = struct.Struct("!d")  # the server's CPU seconds over the writes
#: How long the server process may take to listen.
_START_SECONDS = 30


def _same(data: bytes) -> bytes:
    return data


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


async def _write(request: bytes, context: aio.ServicerContext[Any, Any]) -> Any:
    """Write the asked messages, one warm-up first, then a last one with the CPU spent."""
    messages, size = _REQUEST.unpack(request)
    payload = b"x" * size
    await context.write(payload)
    before = _cpu()
    for _ in range(messages):
        await context.write(payload)
    await context.write(_FIGURE.pack(_cpu() - before))


async def _serve(ports: Queue[int]) -> None:
    server = aio.server()
    handler = grpc.unary_stream_rpc_method_handler(
        _write, request_deserializer=_same, response_serializer=_same
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("scriptgen.costs.Writes", {"Write": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ports.put(port)
    await server.wait_for_termination()


def _server_process(ports: Queue[int]) -> None:
    uvloop.run(_serve(ports))


async def _measure(port: int, messages: int, size: int) -> float:
    """The server's CPU µs per message of one run."""
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_stream(_METHOD, request_serializer=_same, response_deserializer=_same)
        count, last = 0, b""
        async for message in call(_REQUEST.pack(messages, size)):
            count, last = count + 1, message  # only the last is kept: it holds the figure
    if count != messages + 2:
        raise RuntimeError(f"{count} messages came, not {messages + 2}")
    (spent,) = _FIGURE.unpack(last)
    return float(spent) / messages * 1e6


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(part) for part in value.split(",")]
    except ValueError:
        message = f"must be sizes in bytes joined by commas, not {value!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not sizes or any(size < 1 or size > 1024 * 1024 for size in sizes):
        raise argparse.ArgumentTypeError(f"each size must be 1..1048576 bytes, not {value!r}")
    return sizes


async def _all(port: int, messages: int, runs: int, sizes: list[int]) -> None:
    print(f"{messages} messages per run, one stream")
    for size in sizes:
        label = f"{size}B"
        figures = []
        for run in range(1, runs + 1):
            figure = await _measure(port, messages, size)
            figures.append(figure)
            print(f"run {run:<4} {label:<8} {figure:6.0f} µs/message")
        print(f"median   {label:<8} {statistics.median(figures):6.0f} µs/message")


def _port(ports: Queue[int], server: BaseProcess) -> int:
    """The port the server process announces, or an error as soon as it has died."""
    for _ in range(_START_SECONDS * 10):
        try:
            return ports.get(timeout=0.1)
        except queue.Empty:
            if not server.is_alive():
                sys.exit(f"the server process ended ({server.exitcode}) before it listened")
    sys.exit(f"the server process did not listen within {_START_SECONDS} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=at_least_one, default=2000)
    parser.add_argument("--runs", type=at_least_one, default=3)
    parser.add_argument("--sizes", type=_sizes, default=[200, 5000, 20000, 100000])
    arguments = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    ports: Queue[int] = context.Queue()
    server = context.Process(target=_server_process, args=(ports,), daemon=True)
    server.start()
    try:
        port = _port(ports, server)
        uvloop.run(_all(port, arguments.messages, arguments.runs, arguments.sizes))
    finally:
        server.terminate()
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
            server.join(timeout=10)


if __name__ == "__main__":
    main()
