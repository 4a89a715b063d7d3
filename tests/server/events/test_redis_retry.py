"""The Redis retry budget is elapsed time, and its backoff is jittered.

A partitioned Redis is a server that takes connections and never answers (a
real listening socket here): every attempt waits out a timeout, so a budget
counted in attempts hung a call for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest

from server.errors import Unavailable
from server.events import open_redis
from server.events.redis_connection import BLOCK_MILLISECONDS, TimedRetry, redis_errors


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server on a free port that accepts connections and never answers; its port."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0, family=socket.AF_INET)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


async def test_a_redis_that_never_answers_is_unavailable_after_the_budget() -> None:
    retry_seconds = 1.0
    async with silent_server() as port:
        redis = open_redis(f"redis://127.0.0.1:{port}/0", "test:", retry_seconds=retry_seconds)
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable) as raised:
                async with redis_errors():
                    await redis.client.get(redis.key("anything"))
            took = time.monotonic() - started
        finally:
            await redis.aclose()
    assert raised.value.reason == "REDIS_UNAVAILABLE"
    # The budget plus the one attempt under way when it ran out (a reply's socket timeout).
    # Before: 6 attempts of 7 s each, and a connect's own retries inside each of them.
    reply_timeout = BLOCK_MILLISECONDS / 1000 + 5.0
    assert took < retry_seconds + reply_timeout + 1.0


def test_the_backoff_between_attempts_is_jittered() -> None:
    backoff = TimedRetry(10.0)._backoff
    delays = {backoff.compute(6) for _ in range(50)}
    assert len(delays) > 1
    assert all(0 < delay <= 0.5 for delay in delays)
