"""Streams served from the Redis event log leave no Redis socket behind when they are cancelled.

On a Redis of their own (a throwaway `redis-server`), so CLIENT LIST counts only
this test's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from scriptgen.v1 import generation_pb2, generation_service_pb2

from server import Core, SyntheticConfig
from server.errors import Unavailable
from server.events import RedisEventLog, open_redis
from server.events.redis_connection import BLOCK_MILLISECONDS
from tests.backends.redis import RedisServer, client_count
from tests.conftest import fast_core_config
from tests.server.rpc import connect

gs = generation_service_pb2
NAME = "generations/gsockets"
STREAMS = 50


def resource_warnings_at_collection() -> list[str]:
    """What a full garbage collection warns about unclosed resources."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


async def test_a_follower_whose_cancellation_was_swallowed_stops(own_redis: RedisServer) -> None:
    connection = open_redis(own_redis.url, "sockets:")
    log = RedisEventLog(connection)
    try:
        await log.create(NAME)
        queued = generation_pb2.GenerationEvent(generation=NAME, sequence=1)
        queued.queued.parent = "projects/p"
        await log.append(queued)

        async def follow() -> list[bytes]:
            # Swallowed, as redis-py's send (3.11's wait_for) does when the send just completed.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)
            return [event async for event in log.follow_encoded(NAME, 1)]

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        follower.cancel()  # the client left: its stream is cancelled
        # Well under one blocking read: it must not go on reading for a caller who left.
        await asyncio.wait({follower}, timeout=BLOCK_MILLISECONDS / 1000 / 2)
        assert follower.done(), "the cancelled follower is still reading the log"
        assert follower.cancelled()
    finally:
        await connection.aclose()


async def test_a_command_after_close_opens_no_socket(own_redis: RedisServer) -> None:
    connection = open_redis(own_redis.url, "sockets:")
    await connection.client.ping()
    await connection.aclose()
    # A stream's clean-up that runs after the core closed Redis (a late generator finalizer).
    with pytest.raises(Unavailable) as raised:
        await RedisEventLog(connection).ended(NAME)
    assert raised.value.reason == "REDIS_UNAVAILABLE"
    assert client_count(own_redis.url) == 0
    assert resource_warnings_at_collection() == []


async def _cancel_at_some_point(call: aio.UnaryStreamCall[object, object], delay: float) -> None:
    if delay >= 0:
        await call.read()  # the stream is being served
        await asyncio.sleep(delay)
    call.cancel()


async def test_cancelled_streams_leave_no_redis_socket(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    before = client_count(own_redis.url)
    config = replace(
        fast_core_config(tmp_path),
        metrics_address=None,
        redis_url=own_redis.url,
        heartbeat_seconds=0.2,
        # Jobs that plan for a while, then write slowly: streams stay open, mostly in XREAD.
        synthetic=SyntheticConfig(first_token_seconds=1.0, tokens_per_second=40.0),
    )
    core = Core(config)
    await core.start()
    try:
        async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
            project = await rpc.create_project()
            opening = rpc.generations.GenerateScript(
                gs.GenerateScriptRequest(parent=project.name, title="Followed", detach=True)
            )
            first = await opening.read()
            assert isinstance(first, gs.GenerateScriptResponse)
            followed = first.event.generation
            opening.cancel()
            rng = random.Random(7)
            calls: list[aio.UnaryStreamCall[Any, Any]] = []
            for index in range(STREAMS):
                if index % 2:
                    request = gs.StreamGenerationEventsRequest(name=followed)
                    calls.append(rpc.generations.StreamGenerationEvents(request))
                else:
                    started = gs.GenerateScriptRequest(
                        parent=project.name, title=f"Stream {index}", detach=True
                    )
                    calls.append(rpc.generations.GenerateScript(started))
            # Cancelled before the first event, at once after it, or while following.
            delays = [rng.choice([-1.0, 0.0, 0.001, rng.uniform(0, 1.5)]) for _ in calls]
            async with asyncio.timeout(30):
                await asyncio.gather(
                    *(_cancel_at_some_point(c, d) for c, d in zip(calls, delays, strict=True))
                )
            await asyncio.sleep(0.3)
    finally:
        await core.stop(grace=0.0)
    assert client_count(own_redis.url) == before
    assert resource_warnings_at_collection() == []
    await asyncio.sleep(0.3)  # clean-ups that the collection let go run now
    assert client_count(own_redis.url) == before
