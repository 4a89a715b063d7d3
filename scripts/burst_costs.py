"""What a burst of job starts pays per job for its model request, in-process.

    .venv/bin/python scripts/burst_costs.py [--jobs 200]

`jobs` concurrent requests through `OpenAIChatProvider` (the `openai` SDK
over aiohttp) to the load tool's OpenAI stand-in in its own process, each read up
to its first token; prints the CPU seconds of this process per request and the
time to first token, p50 / p95. Run it on a quiet machine: every figure is CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import openai
from scriptgen.loadtest._lifetime import parent_death_signal
from scriptgen.v1 import generation_pb2, project_pb2

from server.providers.base import Brief, Prompt, TokenUsage
from server.providers.openai_chat import OpenAIChatProvider


def _report(label: str, waits: list[float]) -> None:
    waits.sort()
    p95 = waits[max(0, int(len(waits) * 0.95) - 1)]
    print(f"{label:<28} p50 {statistics.median(waits) * 1000:8.2f} ms   p95 {p95 * 1000:8.2f} ms")


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def sdk(jobs: int, base_url: str) -> None:
    client = openai.AsyncOpenAI(
        api_key="sk-burst", base_url=base_url, max_retries=0,
        http_client=openai.DefaultAioHttpClient(),
    )  # fmt: skip
    provider = OpenAIChatProvider(client, "gpt-burst")
    brief = Brief(project_pb2.Project(title="Night Shift"), "Pilot", "", 1)
    prompt = Prompt(generation_pb2.STAGE_WRITE, "system " * 300, "user " * 200, brief)

    async def first_token() -> None:
        stream = provider.stream(prompt, TokenUsage())
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]

    try:
        await first_token()  # connections and imports warm
        for round_ in range(2):
            cpu = time.process_time()
            waits = await asyncio.gather(*(_timed(first_token) for _ in range(jobs)))
            spent = (time.process_time() - cpu) / jobs
            _report(f"openai, {spent * 1000:.2f} ms CPU each ({round_ + 1})", list(waits))
    finally:
        await client.close()


def _with_standin(jobs: int) -> None:
    command = [sys.executable, "-m", "scriptgen.loadtest._standin", "--ttft", "0"]
    command += ["--tokens-per-second", "30", "--tokens", "40"]
    standin = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, preexec_fn=parent_death_signal()
    )
    try:
        assert standin.stdout is not None
        found = re.search(r"(http://\S+/v1)", standin.stdout.readline())
        assert found is not None, "the stand-in did not print its address"
        asyncio.run(sdk(jobs, found.group(1)))
    finally:
        standin.terminate()
        standin.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="burst_costs.py")
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    _with_standin(args.jobs)


if __name__ == "__main__":
    main()
