"""CPU per event, chunk or token of pieces of the streaming hot path, in-process, on uvloop.

    .venv/bin/python scripts/hot_path_costs.py [--runs 11] [--only MEASURE] ...

MEASURE is one of events, relay, cuts, write-chunks, provider, provider-unpaced, starts
(all by default):

* events: `JobEvents.emit` of a text delta → the in-memory event log → one
  follower per job reading it (`follow_encoded`), 500 jobs x 60 events;
* relay: the gateway's `EventRelay`, from its pump taking a gRPC response to the
  SSE writer's `next()`, 500 streams x 60 events arriving on one shared tick;
* cuts: `DeltaCoalescer` at a 100 ms window fed a chunk every 33 ms (a model at
  ~30 tok/s, so cuts come from its timer), 500 streams x 60 chunks; the writer's
  own sleeps are in the figure;
* write-chunks: the write stage's loop over the provider router, fed by the synthetic
  writer at no pace and one token per chunk (the per-token peak relay's writer):
  `inter_token_clock`, `DeltaCoalescer` (100 ms) → the in-memory log, 200 streams of a
  20-minute episode; the writer's own yields to the loop are in the figure (one per
  32 chunks since session 37, one per chunk before);
* provider, provider-unpaced: the real provider path's reading side, 200 streams x
  150 tokens from the OpenAI stand-in (`scriptgen.loadtest._standin`, its own
  process, 30 tokens/s per stream): the `openai` SDK over the core's HTTP
  transport → `OpenAIChatProvider` → `DeltaCoalescer` (100 ms) → the in-memory
  log; the body read once per cut (`server.providers.body_pacing`), or as every
  token comes. The request's CPU is in the figure too.
* starts: a core in-process (SQLite and embedded defaults, synthetic writer, auth off),
  500 `GenerationServicer.GenerateScript` calls begun at once on one project, each to its
  first response (`queued`), after a warm-up burst: the core's own work of a job start,
  without gRPC or the Relay call around it (the whole core per start, those included, is
  `scripts/stream_start_costs.py`'s).

Each line prints the median (and every run) of the process's CPU microseconds per
event or chunk; every run starts after a full garbage collection. To compare with an
older tree, run this file against that tree's packages: `git worktree add /tmp/old <commit>` and
`PYTHONPATH=/tmp/old:/tmp/old/clients/python .venv/bin/python scripts/hot_path_costs.py`.
Run on a quiet machine, old and new alternated: other work moves every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from contextlib import aclosing, nullcontext
from pathlib import Path
from typing import Any, cast

import grpc.aio
import openai
import uvloop
from scriptgen.loadtest._lifetime import parent_death_signal
from scriptgen.v1 import generation_pb2, generation_service_pb2, project_pb2
from scriptgen.v1.generation_service_pb2 import GenerateScriptResponse

from gateway.sse import EventRelay
from server.app import Core
from server.auth import AuthConfig
from server.config import CoreConfig, RouterConfig, SyntheticConfig
from server.events.memory import MemoryEventLog
from server.jobs.coalescer import DeltaCoalescer
from server.jobs.emitter import JobEvents
from server.metrics import CoreMetrics
from server.providers.base import Brief, Prompt, TokenUsage
from server.providers.body_pacing import paced_reads
from server.providers.http_transport import AiohttpTransport
from server.providers.openai_chat import OpenAIChatProvider
from server.providers.router import ProviderRouter
from server.providers.synthetic import SyntheticProvider, write_screenplay

STREAMS = 500
EVENTS = 60
#: The starts measure: a burst of this many job starts at once, as `sse-burst-200` is the
#: gateway's (but on one project, as the load tool's streams are).
START_STREAMS = 500
#: The write-chunks measure: 200 streams of a 20-minute episode (~2,800 one-token chunks each).
WRITE_STREAMS = 200
WRITE_MINUTES = 20


async def events_per_event() -> float:
    log = MemoryEventLog()
    metrics = CoreMetrics()
    emitters = []
    for index in range(STREAMS):
        name = f"generations/g{index:020x}"
        await log.create(name)
        emitters.append(JobEvents(name, log, metrics, 0))
    read = [0]

    async def follow(name: str) -> None:
        async for _ in log.follow_encoded(name, 0):
            read[0] += 1

    followers = [asyncio.create_task(follow(e.generation)) for e in emitters]
    await asyncio.sleep(0)
    delta = generation_pb2.GenerationEvent.TextDelta
    started = time.process_time()
    for round_ in range(EVENTS):
        for emitter in emitters:
            await emitter.emit("text_delta", delta(text=" and then", offset=round_ * 9))
        await asyncio.sleep(0)
    # The followers' last turns: bare loop turns, which are what is measured.
    while read[0] < STREAMS * EVENTS:  # noqa: ASYNC110
        await asyncio.sleep(0)
    spent = time.process_time() - started
    for follower in followers:
        follower.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    return 1e6 * spent / (STREAMS * EVENTS)


class _Tick:
    """Every relay's upstream waits on one shared tick, as streams cut on one grid."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        await self._next

    def fire(self) -> None:
        due, self._next = self._next, None
        if due is not None:
            due.set_result(None)


class _Upstream:
    """A server stream of EVENTS responses, one per tick."""

    def __init__(self, tick: _Tick) -> None:
        self._tick = tick

    def __aiter__(self) -> AsyncIterator[generation_service_pb2.GenerateScriptResponse]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[generation_service_pb2.GenerateScriptResponse]:
        event = generation_pb2.GenerationEvent(generation="generations/g1", sequence=1)
        response = generation_service_pb2.GenerateScriptResponse(event=event)
        for _ in range(EVENTS):
            await self._tick.wait()
            yield response

    def cancel(self) -> bool:
        return True


async def relay_per_event() -> float:
    tick = _Tick()
    relays = [
        EventRelay(cast("grpc.aio.UnaryStreamCall[Any, Any]", _Upstream(tick)))
        for _ in range(STREAMS)
    ]
    written = [0]

    async def writer(relay: EventRelay) -> None:
        while isinstance(await relay.next(15.0), generation_pb2.GenerationEvent):
            written[0] += 1

    writers = [asyncio.create_task(writer(relay)) for relay in relays]
    for _ in range(3):
        await asyncio.sleep(0)
    started = time.process_time()
    while not all(w.done() for w in writers):
        tick.fire()
        for _ in range(4):
            await asyncio.sleep(0)
    spent = time.process_time() - started
    for relay in relays:
        await relay.close()
    if written[0] != STREAMS * EVENTS:
        raise RuntimeError(f"{written[0]} events written, not {STREAMS * EVENTS}")
    return 1e6 * spent / (STREAMS * EVENTS)


async def cuts_per_chunk() -> float:
    log = MemoryEventLog()
    metrics = CoreMetrics()

    async def stream(index: int) -> None:
        name = f"generations/g{index:020x}"
        await log.create(name)
        deltas = DeltaCoalescer(JobEvents(name, log, metrics, 0), 0.1)
        await asyncio.sleep(index * 0.033 / STREAMS)  # streams spread over one chunk's gap
        for _ in range(EVENTS):
            await deltas.add(" word")
            await asyncio.sleep(0.033)
        await deltas.close()

    started = time.process_time()
    await asyncio.gather(*(stream(index) for index in range(STREAMS)))
    return 1e6 * (time.process_time() - started) / (STREAMS * EVENTS)


async def write_chunks() -> float:
    """The write stage's loop as the pipeline runs it, fed by the synthetic writer at no pace,
    one token per chunk (the per-token peak relay's writer), through the provider router."""
    log = MemoryEventLog()
    metrics = CoreMetrics()
    router = ProviderRouter(["synthetic"], RouterConfig(), metrics)
    writer = SyntheticProvider(
        SyntheticConfig(
            first_token_seconds=0,
            tokens_per_second=0,
            unpaced_chunk_tokens=1,
            episode_minutes=WRITE_MINUTES,
        )
    )
    chunks = [0]

    async def stream(index: int) -> None:
        name = f"generations/g{index:020x}"
        await log.create(name)
        project = project_pb2.Project(name=f"projects/p{index % 10}", title="P")
        prompt = Prompt(generation_pb2.STAGE_WRITE, "system", "user", Brief(project, name, "", 1))
        deltas = DeltaCoalescer(JobEvents(name, log, metrics, 0), 0.1)
        tick = metrics.inter_token_clock("write")
        parts: list[str] = []
        with paced_reads(deltas):
            async with aclosing(router.stream("write", prompt, [writer], {})) as chunked:
                async for chunk in chunked:  # Pipeline._write's loop, less its progress events
                    tick()
                    await deltas.add(chunk)
                    parts.append(chunk)
        await deltas.close()
        written[index] = (prompt.brief, "".join(parts))
        chunks[0] += len(parts)

    written: dict[int, tuple[Brief, str]] = {}
    started = time.process_time()
    await asyncio.gather(*(stream(index) for index in range(WRITE_STREAMS)))
    spent = time.process_time() - started
    for index, (brief, text) in written.items():
        if text != write_screenplay(brief, WRITE_MINUTES):
            raise RuntimeError(f"stream {index}: the chunks are not the writer's text")
    return 1e6 * spent / chunks[0]


PROVIDER_STREAMS = 200
PROVIDER_TOKENS = 150
#: The OpenAI stand-in process and its base URL, once started.
_STANDIN: list[tuple[subprocess.Popen[str], str]] = []


def _standin() -> str:
    """The OpenAI stand-in's base URL, started once for every run (stopped at exit)."""
    if not _STANDIN:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scriptgen.loadtest._standin",
                "--ttft",
                "0",
                "--tokens-per-second",
                "30",
                "--tokens",
                str(PROVIDER_TOKENS),
            ],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=parent_death_signal(),
        )
        assert process.stdout is not None
        _STANDIN.append((process, process.stdout.readline().split()[-1]))
    return _STANDIN[0][1]


async def provider_per_token(*, paced: bool) -> float:
    transport = AiohttpTransport()
    client = openai.AsyncOpenAI(
        api_key="stand-in",
        base_url=_standin(),
        max_retries=0,
        http_client=openai.DefaultAioHttpClient(transport=transport),
    )
    provider = OpenAIChatProvider(client, "gpt-stand-in")
    brief = Brief(project_pb2.Project(title="Bench"), "Pilot", "", 1)
    prompt = Prompt(generation_pb2.STAGE_WRITE, "You write screenplays.", "Write.", brief)
    log = MemoryEventLog()
    metrics = CoreMetrics()
    tokens = [0]

    async def stream(index: int) -> None:
        name = f"generations/g{index:020x}"
        await log.create(name)
        deltas = DeltaCoalescer(JobEvents(name, log, metrics, 0), 0.1)
        usage = TokenUsage()
        with paced_reads(deltas) if paced else nullcontext():
            async for text in provider.stream(prompt, usage):
                await deltas.add(text)
        await deltas.close()
        tokens[0] += usage.output_tokens

    started = time.process_time()
    await asyncio.gather(*(stream(index) for index in range(PROVIDER_STREAMS)))
    spent = time.process_time() - started
    await client.close()
    return 1e6 * spent / tokens[0]


async def provider_paced() -> float:
    return await provider_per_token(paced=True)


async def provider_unpaced() -> float:
    return await provider_per_token(paced=False)


class _StartContext:
    """What GenerateScript uses of a call's context: no metadata, no deadline."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def time_remaining(self) -> None:
        return None

    async def send_initial_metadata(self, metadata: object) -> None:
        return None

    def set_trailing_metadata(self, metadata: object) -> None:
        return None

    async def abort(self, code: object, details: str = "", trailing_metadata: object = ()) -> None:
        raise RuntimeError(details)


async def _start_burst(core: Core, parent: str) -> float:
    """START_STREAMS GenerateScript calls at once, each to its first response; CPU µs each.
    Their streams are closed and their jobs cancelled after."""
    servicer = core.generation_servicer
    assert servicer is not None
    requests = [
        generation_service_pb2.GenerateScriptRequest(parent=parent, title=f"Episode {index}")
        for index in range(START_STREAMS)
    ]
    context = cast(Any, _StartContext())
    # The method is an async generator (the servicer's type says only AsyncIterator).
    streams = [
        cast(AsyncGenerator[bytes, None], servicer.GenerateScript(request, context))
        for request in requests
    ]
    started = time.process_time()
    firsts = await asyncio.gather(*(anext(stream) for stream in streams))
    spent = time.process_time() - started
    events = [GenerateScriptResponse.FromString(first).event for first in firsts]
    assert all(event.WhichOneof("kind") == "queued" for event in events)
    for stream in streams:
        await stream.aclose()
    for event in events:
        await core.runner.cancel(event.generation)
    return 1e6 * spent / START_STREAMS


async def starts() -> float:
    with tempfile.TemporaryDirectory() as data_dir:
        config = CoreConfig(
            data_dir=Path(data_dir),
            grpc_address="127.0.0.1:0",
            metrics_address=None,
            synthetic=SyntheticConfig(first_token_seconds=60.0, tokens_per_second=30.0),
            auth=AuthConfig(enabled=False),
        )
        core = Core(config)
        await core.start()
        try:
            project = await core.store.create_project("bench", project_pb2.Project(title="Bench"))
            await _start_burst(core, project.name)  # warms the core up; not counted
            await asyncio.sleep(0.5)  # the cancelled jobs end
            gc.collect()
            return await _start_burst(core, project.name)
        finally:
            await core.stop()


MEASURES: dict[str, tuple[str, Callable[[], Coroutine[Any, Any, float]]]] = {
    "events": ("µs CPU per event, emit → in-memory log → follower", events_per_event),
    "relay": ("µs CPU per event, gateway relay pump → SSE writer", relay_per_event),
    "cuts": ("µs CPU per chunk, coalescer with timed cuts", cuts_per_chunk),
    "write-chunks": ("µs CPU per chunk, token-per-chunk writer → router → coalescer", write_chunks),
    "provider": ("µs CPU per token, stand-in body read once per cut", provider_paced),
    "provider-unpaced": ("µs CPU per token, stand-in body read per token", provider_unpaced),
    "starts": ("µs CPU per job start, GenerateScript to its first response", starts),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--only", choices=sorted(MEASURES), action="append")
    args = parser.parse_args()
    for name in args.only or list(MEASURES):
        label, measure = MEASURES[name]
        runs: list[float] = []
        for _ in range(args.runs):
            gc.collect()  # the previous run's garbage is not this run's cost
            runs.append(uvloop.run(measure()))
        listed = " ".join(f"{run:.2f}" for run in runs)
        print(f"{name}: {label}: median {statistics.median(runs):.2f} ({listed})")
    for process, _ in _STANDIN:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
