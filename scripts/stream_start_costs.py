"""The gateway's and the core's CPU per SSE stream start, each server in its own process.

    .venv/bin/python scripts/stream_start_costs.py [--streams 500] [--runs 5] [--workers 1]

Starts a core (synthetic writer, first token after 60 s: no token is written while
measured) and a gateway with `--workers` processes, as `scriptgen loadtest --spawn` does,
and creates a project. Each run opens `streams` SSE streams at once (`POST
…/generations`, `Accept: text/event-stream`, raw sockets: the client's own cost stays
small and apart), each read until its first event, and reads every server process's
CPU (all threads, /proc/<pid>/task/*/schedstat) before the burst and once the last
first event came; then it closes the streams (their jobs are cancelled) and waits for
the servers to go quiet.

Prints, per run and as medians: CPU µs per stream start in the gateway (its workers
together) and in the core, and the time to first event p50 / p95 over the burst. This
is the work a burst of new streams costs before any token, where the 1000-stream
burst's first half second goes (BENCHMARKS.md, session 16). Run it on a quiet machine.

With `--floor`, the same bursts go to a bare aiohttp server on uvloop in its own process,
whose one route reads the body and answers with the same kind of opening (headers,
`retry:` and one event) and holds the stream: aiohttp's own share of a stream start,
below which the gateway cannot go while it is built on aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvloop
from scriptgen.cli._args import at_least_one
from scriptgen.loadtest._config import Protocol, SyntheticPace
from scriptgen.loadtest._lifetime import parent_death_signal
from scriptgen.loadtest._spawn import spawned_servers
from scriptgen.loadtest._sse import SseTarget

_FIRST_TOKEN_SECONDS = 60.0
_GENERATION = re.compile(rb'"generation":\s*"(generations/[^"]+)"')
#: How long a stream may take to its first event before the run fails.
_STREAM_WAIT_SECONDS = 30.0
#: How long the servers may stay busy between runs before the run fails.
_QUIET_WAIT_SECONDS = 60.0


def _cpu(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds of each process so far, its live threads' together (nanosecond grain)."""
    return {
        pid: sum(
            int((task / "schedstat").read_text().split()[0])
            for task in Path(f"/proc/{pid}/task").iterdir()
        )
        / 1e9
        for pid in pids
    }


async def _quiet(pids: Sequence[int], *, share: float = 0.02, seconds: float = 0.5) -> None:
    """Wait until the servers together use under `share` of a CPU over `seconds`; raises
    TimeoutError after _QUIET_WAIT_SECONDS (a server busy on its own: no figure is fair)."""
    async with asyncio.timeout(_QUIET_WAIT_SECONDS):
        while True:
            before = sum(_cpu(pids).values())
            await asyncio.sleep(seconds)
            if sum(_cpu(pids).values()) - before < share * seconds:
                return


def _request(project: str, host: str) -> bytes:
    """The bytes of one stream's request, as the load tool sends them."""
    return SseTarget((), host).request(project, json.dumps({"title": "Pilot"}).encode())


async def _open_stream(
    host: str, port: int, request: bytes, began: float
) -> tuple[float, asyncio.StreamWriter, str]:
    """Open one stream; the seconds to its first event, its connection to close, its job."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    seen = b""
    try:
        async with asyncio.timeout(_STREAM_WAIT_SECONDS):
            while b"\nevent: " not in seen:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                seen += chunk
    except TimeoutError:
        pass
    if b"\nevent: " not in seen:
        writer.close()
        raise RuntimeError(f"no first event; the stream answered {seen[:300]!r}")
    waited = time.monotonic() - began
    job = _GENERATION.search(seen)
    return waited, writer, job.group(1).decode() if job else ""


async def _cancel(session: aiohttp.ClientSession, base_url: str, jobs: Sequence[str]) -> None:
    """Cancel the jobs (a closed stream leaves its job running until its reader lease ends,
    and the core runs at most 1000 jobs)."""
    gate = asyncio.Semaphore(20)

    async def cancel(job: str) -> None:
        async with gate, session.post(f"{base_url}/v1/{job}:cancel", json={}) as answer:
            answer.raise_for_status()

    await asyncio.gather(*(cancel(job) for job in jobs))


@dataclass(frozen=True, slots=True)
class _Burst:
    """One run: each process's CPU µs per stream, the waits for first events (sorted), and
    the jobs the streams started (their connections are closed)."""

    per_stream_us: dict[int, float]
    waits: list[float]
    jobs: list[str]

    def of(self, pids: Sequence[int]) -> float:
        return sum(self.per_stream_us[pid] for pid in pids)


async def _burst(host: str, port: int, request: bytes, pids: Sequence[int], streams: int) -> _Burst:
    """Once `pids` are quiet, open `streams` streams at once, each to its first event."""
    try:
        await _quiet(pids)
    except TimeoutError:
        raise RuntimeError(f"the servers {list(pids)} did not go quiet") from None
    before = _cpu(pids)
    began = time.monotonic()
    opened = await asyncio.gather(
        *(_open_stream(host, port, request, began) for _ in range(streams))
    )
    after = _cpu(pids)
    for _, writer, _ in opened:
        writer.close()
    return _Burst(
        {pid: (after[pid] - before[pid]) / streams * 1e6 for pid in pids},
        sorted(wait for wait, _, _ in opened),
        [job for _, _, job in opened],
    )


def _label(run: int) -> str:
    return "warm-up" if run == 0 else f"run {run}"


async def measure(streams: int, runs: int, workers: int) -> None:
    pace = SyntheticPace(_FIRST_TOKEN_SECONDS, 30.0)
    async with (
        spawned_servers(Protocol.SSE, pace, 60.0, gateway_args=[f"--workers={workers}"]) as servers,
        aiohttp.ClientSession() as session,
    ):
        target = servers.target
        created = await session.post(
            f"{target.base_url}/v1/projects", json={"title": "Start costs", "language": "en"}
        )
        project = (await created.json())["name"]
        request = _request(project, f"{target.host}:{target.port}")
        core = [pid for pid, role in servers.processes if role == "core"]
        # The gateway's process and, with several workers, its workers (the supervisor idles).
        gateway = [pid for pid, role in servers.processes if role.startswith("gateway")]
        print(f"core {core}, gateway workers {gateway}; {streams} streams per run")
        per_gateway: list[float] = []
        per_core: list[float] = []
        for run in range(runs + 1):  # the first run warms both servers up, and is not counted
            burst = await _burst(target.host, target.port, request, core + gateway, streams)
            await _cancel(session, target.base_url, burst.jobs)
            waits = burst.waits
            p95 = waits[max(0, int(len(waits) * 0.95) - 1)]
            print(
                f"{_label(run):<8} gateway {burst.of(gateway):6.0f} µs/stream"
                f"   core {burst.of(core):6.0f} µs/stream"
                f"   TTFE p50 {statistics.median(waits) * 1000:5.0f} ms  p95 {p95 * 1000:5.0f} ms"
            )
            if run:
                per_gateway.append(burst.of(gateway))
                per_core.append(burst.of(core))
    print(
        f"median   gateway {statistics.median(per_gateway):6.0f} µs/stream"
        f"   core {statistics.median(per_core):6.0f} µs/stream"
    )


#: A bare aiohttp server on uvloop: reads the body, sends an SSE opening, holds the stream
#: until the client leaves; prints its port.
_FLOOR_SERVER = """
import asyncio, uvloop
from aiohttp import web

async def generate(request):
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(
        b'retry: 1000\\n\\nid: 1\\nevent: queued\\ndata: {"generation": "generations/g0"}\\n\\n'
    )
    await asyncio.sleep(3600)
    return response

async def main():
    app = web.Application()
    app.router.add_post("/v1/projects/{project}/generations", generate)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


async def measure_floor(streams: int, runs: int) -> None:
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FLOOR_SERVER,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=parent_death_signal(),
    )
    try:
        assert server.stdout is not None
        port = int(await server.stdout.readline())
        request = _request("projects/p", f"127.0.0.1:{port}")
        print(f"bare aiohttp server {server.pid}; {streams} streams per run")
        figures: list[float] = []
        for run in range(runs + 1):  # the first run warms it up, and is not counted
            burst = await _burst("127.0.0.1", port, request, [server.pid], streams)
            print(f"{_label(run):<8} aiohttp {burst.of([server.pid]):6.0f} µs/stream")
            if run:
                figures.append(burst.of([server.pid]))
        print(f"median   aiohttp {statistics.median(figures):6.0f} µs/stream")
    finally:
        server.kill()
        await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=at_least_one, default=500)
    parser.add_argument("--runs", type=at_least_one, default=5)
    parser.add_argument("--workers", type=at_least_one, default=1)
    parser.add_argument(
        "--floor", action="store_true", help="measure a bare aiohttp SSE server instead"
    )
    arguments = parser.parse_args()
    if arguments.floor:
        uvloop.run(measure_floor(arguments.streams, arguments.runs))
    else:
        uvloop.run(measure(arguments.streams, arguments.runs, arguments.workers))


if __name__ == "__main__":
    main()
