"""The core's CPU per model request through the `openai` SDK, against aiohttp's own.

    .venv/bin/python scripts/sdk_request_costs.py [--requests 200] [--runs 5] [--floor]

Starts the load tool's OpenAI stand-in (`scriptgen.loadtest._standin`, first token at
once) in its own process and, in this one, a client built as the core builds it: the
SDK's `DefaultAioHttpClient` over the core's transport (`server.providers.http_transport`),
no SDK retries, the start-up heap frozen. Each run sends `requests` Chat Completions
requests at once through `OpenAIChatProvider`, each read to its first text and then
closed (as a cancelled job closes it: the connection goes too), and reads this
process's CPU time (all threads) before and after. The first run warms the client up
and is not counted.

Prints, per run and as the median, CPU µs per request. With `--floor`, the same
requests (the same body bytes; the SDK's authorization, content type, accept and user
agent headers, not its `X-Stainless-*` ones) go through a bare aiohttp session
instead: aiohttp's own share, below which no client built on it can go.
The difference is what the SDK and httpx2 add to every job's model request, the
largest part of the core's work in the real provider path's burst (BENCHMARKS.md,
session 20). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import subprocess
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import cast

import aiohttp
import openai
import orjson
import uvloop
from scriptgen._heap import freeze_startup_heap
from scriptgen.cli._args import at_least_one
from scriptgen.loadtest._config import SyntheticPace
from scriptgen.loadtest._lifetime import parent_death_signal
from scriptgen.loadtest._spawn import standin_command
from scriptgen.v1 import generation_pb2, project_pb2

from server.providers.base import Brief, Prompt, TokenUsage
from server.providers.factory import SDK_TIMEOUT_SECONDS
from server.providers.http_transport import sdk_transport
from server.providers.openai_chat import OpenAIChatProvider

#: The model name sent; the stand-in answers any.
_MODEL = "standin"
#: A write stage's prompt of about the size the pipeline sends (its templates and outline).
_PROMPT = Prompt(
    generation_pb2.STAGE_WRITE,
    "You write screenplays in Fountain. " * 12,
    "Write the episode from this outline. " * 40,
    Brief(project_pb2.Project(name="projects/p", title="Load"), "Pilot", "", 1),
)
#: Seconds to wait between runs, for the closed connections to go.
_PAUSE_SECONDS = 0.3


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


async def _run(requests: int, one: Callable[[], Awaitable[None]]) -> float:
    """CPU µs per request of `requests` at once."""
    await asyncio.sleep(_PAUSE_SECONDS)
    before = _cpu()
    await asyncio.gather(*(one() for _ in range(requests)))
    return (_cpu() - before) / requests * 1e6


def _through_sdk(base_url: str) -> tuple[Callable[[], Awaitable[None]], openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        api_key="sk-scriptgen-costs",
        base_url=base_url,
        max_retries=0,
        timeout=SDK_TIMEOUT_SECONDS,
        http_client=openai.DefaultAioHttpClient(transport=sdk_transport()),
    )
    provider = OpenAIChatProvider(client, _MODEL)

    async def one() -> None:
        # The provider's stream is an async generator: closing it closes the response.
        stream = cast(AsyncGenerator[str, None], provider.stream(_PROMPT, TokenUsage()))
        async with aclosing(stream):
            if not await anext(stream):
                raise RuntimeError("the first text was empty")

    return one, client


def _bare(base_url: str, session: aiohttp.ClientSession) -> Callable[[], Awaitable[None]]:
    body = orjson.dumps(
        {
            "model": _MODEL,
            "messages": [
                {"role": "system", "content": _PROMPT.system},
                {"role": "user", "content": _PROMPT.user},
            ],
            "max_completion_tokens": 8192,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    headers = {
        "Authorization": "Bearer sk-scriptgen-costs",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"AsyncOpenAI/Python {openai.__version__}",
    }
    url = f"{base_url}/chat/completions"

    async def one() -> None:
        response = await session.post(url, data=body, headers=headers, auto_decompress=False)
        try:
            response.raise_for_status()
            if not await response.content.readany():
                raise RuntimeError("the body ended before its first event")
        finally:
            response.release()
            await response.wait_for_close()

    return one


async def measure(base_url: str, requests: int, runs: int, floor: bool) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
    client: openai.AsyncOpenAI | None = None
    try:
        if floor:
            one, label = _bare(base_url, session), "aiohttp"
        else:
            one, client = _through_sdk(base_url)
            label = "sdk"
        gc.collect()
        freeze_startup_heap()
        print(f"{requests} requests per run, {label}")
        figures: list[float] = []
        for run in range(runs + 1):  # the first run warms the client up: not counted
            spent = await _run(requests, one)
            name = f"run {run}" if run else "warm-up"
            print(f"{name:<8} {label:<7} {spent:6.0f} µs/request")
            if run:
                figures.append(spent)
        print(f"median   {label:<7} {statistics.median(figures):6.0f} µs/request")
    finally:
        if client is not None:
            await client.close()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=at_least_one, default=200)
    parser.add_argument("--runs", type=at_least_one, default=5)
    parser.add_argument(
        "--floor", action="store_true", help="send the requests with bare aiohttp instead"
    )
    arguments = parser.parse_args()
    standin = subprocess.Popen(
        standin_command(SyntheticPace(first_token_seconds=0.0, tokens_per_second=30.0), 50),
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=parent_death_signal(),
    )
    try:
        assert standin.stdout is not None
        announced = standin.stdout.readline().split()
        if not announced or not announced[-1].startswith("http://"):
            sys.exit(f"the stand-in did not start: {announced!r}")
        print(f"stand-in {standin.pid} at {announced[-1]}")
        uvloop.run(measure(announced[-1], arguments.requests, arguments.runs, arguments.floor))
    finally:
        standin.terminate()
        standin.wait(timeout=10)


if __name__ == "__main__":
    main()
