"""One timer per provider attempt bounds each wait for a chunk, as a timeout per chunk did."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
from scriptgen.v1 import generation_pb2, project_pb2

from server.config import RouterConfig
from server.errors import Unavailable
from server.metrics import CoreMetrics
from server.providers.base import Brief, Prompt, TokenUsage
from server.providers.router import ProviderRouter

PROMPT = Prompt(
    generation_pb2.STAGE_WRITE,
    "system",
    "user",
    Brief(project_pb2.Project(name="projects/p", title="P"), "T", "", 1),
)


class Scripted:
    """Yields `chunks`, sleeping `gaps[i]` before chunk i."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, chunks: list[str], gaps: list[float]) -> None:
        self.chunks = chunks
        self.gaps = gaps

    async def stream(self, prompt: Prompt, usage: TokenUsage) -> AsyncIterator[str]:
        for chunk, gap in zip(self.chunks, self.gaps, strict=True):
            await asyncio.sleep(gap)
            yield chunk


def _router(idle: float) -> ProviderRouter:
    config = RouterConfig(
        first_token_timeout_seconds=idle, idle_timeout_seconds=idle, max_attempts=1
    )
    return ProviderRouter(["scripted"], config, CoreMetrics())


async def _read(
    router: ProviderRouter, provider: Scripted, pause: float = 0.0, found: list[str] | None = None
) -> list[str]:
    found = [] if found is None else found
    stream = router.stream("write", PROMPT, [provider], {})
    async with aclosing(stream):
        async for chunk in stream:
            found.append(chunk)
            await asyncio.sleep(pause)  # the consumer's time is not the model's
    return found


async def test_many_quick_chunks_and_a_slow_consumer_do_not_time_out() -> None:
    chunks = [f"w{i} " for i in range(200)]
    provider = Scripted(chunks, [0.0] * 100 + [0.05] + [0.0] * 99)
    assert await _read(_router(idle=0.2), provider) == chunks
    slow = Scripted(chunks[:4], [0.0, 0.05, 0.05, 0.05])
    assert await _read(_router(idle=0.2), slow, pause=0.3) == chunks[:4]


async def test_a_stall_after_text_ends_the_attempt_within_the_idle_time() -> None:
    provider = Scripted(["one ", "two ", "never"], [0.0, 0.05, 5.0])
    loop = asyncio.get_running_loop()
    started = loop.time()
    found: list[str] = []
    with pytest.raises(Unavailable):
        await _read(_router(idle=0.3), provider, found=found)
    assert found == ["one ", "two "]
    assert 0.3 <= loop.time() - started < 1.5


async def test_cancelling_the_reader_is_a_cancellation_not_a_timeout() -> None:
    provider = Scripted(["one ", "never"], [0.0, 5.0])
    task = asyncio.create_task(_read(_router(idle=0.2), provider))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
