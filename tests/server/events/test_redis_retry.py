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


_REPLIES = {b"PING": b"+PONG\r\n", b"GET": b"-LOADING Redis is loading the dataset\r\n"}


@contextlib.asynccontextmanager
async def restarting_server(refuse_seconds: float) -> AsyncIterator[int]:
    """A Redis coming back: for `refuse_seconds` it closes every connection at once, then
    it answers the handshake (PONG, OK) and every GET with LOADING. Its port."""
    started = time.monotonic()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if time.monotonic() - started < refuse_seconds:
                return
            while True:
                header = await reader.readline()
                if not header:
                    return
                words = []
                for _ in range(int(header[1:])):
                    size = int((await reader.readline())[1:])
                    words.append((await reader.readexactly(size + 2))[:-2].upper())
                writer.write(_REPLIES.get(words[0], b"+OK\r\n"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, family=socket.AF_INET)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_connecting_and_the_command_share_one_budget() -> None:
    retry_seconds = 1.0
    async with restarting_server(refuse_seconds=0.8) as port:
        redis = open_redis(f"redis://127.0.0.1:{port}/0", "test:", retry_seconds=retry_seconds)
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable):
                async with redis_errors():
                    await redis.client.get(redis.key("anything"))
            took = time.monotonic() - started
        finally:
            await redis.aclose()
    # Before: the pool's connect retried 0.8 s under a budget of its own, then the command
    # (LOADING) got a whole second budget: ~1.8 s.
    assert retry_seconds <= took < retry_seconds + 0.4


def test_the_backoff_between_attempts_is_jittered() -> None:
    backoff = TimedRetry(10.0)._backoff
    delays = {backoff.compute(6) for _ in range(50)}
    assert len(delays) > 1
    assert all(0 < delay <= 0.5 for delay in delays)
