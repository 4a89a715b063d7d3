"""Redis restarted under a running job: what happens is defined, and tested here.

* Redis back within `redis_retry_seconds` with its data (persistence on): the
  job and its readers pause, then carry on — no gap, no duplicate.
* Redis back empty (no persistence): the job stops (its provider call is
  closed) and every open stream ends with DATA_LOSS, reason EVENT_LOG_LOST;
  the job is then unknown (NOT_FOUND). Nobody hangs; nothing is lost silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import generation_pb2, generation_service_pb2, project_service_pb2

from server import Core, SyntheticConfig
from tests.backends.postgres import fresh_database
from tests.backends.redis import RedisServer
from tests.conftest import fast_core_config
from tests.server.rpc import connect, error_info, read, script_of

gs = generation_service_pb2


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_url) as url:
        yield url


async def _core(tmp_path: Path, redis: RedisServer, database_url: str) -> Core:
    config = replace(
        fast_core_config(tmp_path / "core"),
        metrics_address=None,
        database_url=database_url,
        redis_url=redis.url,
        redis_retry_seconds=8.0,
        # Six-minute episodes: the job is still writing when Redis goes away.
        synthetic=SyntheticConfig(
            first_token_seconds=0.05, tokens_per_second=150.0, episode_minutes=6
        ),
    )
    core = Core(config)
    await core.start()
    return core


async def _drain(
    call: aio.UnaryStreamCall[gs.GenerateScriptRequest, gs.GenerateScriptResponse],
) -> None:
    while await read(call) is not None:
        pass


@pytest.mark.parametrize("persistent", [True, False], ids=["with-data", "empty"])
async def test_a_redis_restart_mid_job(tmp_path: Path, database_url: str, persistent: bool) -> None:
    redis = RedisServer(persistent=persistent)
    await asyncio.to_thread(redis.start)
    core = await _core(tmp_path, redis, database_url)
    try:
        async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
            project = await rpc.create_project()
            call = rpc.generations.GenerateScript(
                gs.GenerateScriptRequest(parent=project.name, title="Restart")
            )
            events: list[generation_pb2.GenerationEvent] = []
            while len(events) < 25 and (response := await read(call)) is not None:
                events.append(response.event)
            name = events[0].generation
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(redis.start)
            if persistent:
                async with asyncio.timeout(30):
                    while (response := await read(call)) is not None:
                        events.append(response.event)
                replay = await rpc.follow(name)
                saved = await rpc.projects.GetEpisode(
                    project_service_pb2.GetEpisodeRequest(name=events[-1].completed.episode.name)
                )
                assert [e.sequence for e in events] == list(range(1, len(events) + 1))
                assert [e.SerializeToString() for e in replay] == [
                    e.SerializeToString() for e in events
                ]
                assert script_of(events) == saved.episode.script
            else:
                with pytest.raises(aio.AioRpcError) as raised:
                    await asyncio.wait_for(_drain(call), 30)
                assert raised.value.code() == grpc.StatusCode.DATA_LOSS
                assert error_info(raised.value).reason == "EVENT_LOG_LOST"
                for _ in range(200):
                    if not core.runner.running:
                        break
                    await asyncio.sleep(0.05)
                assert core.runner.running == 0
                with pytest.raises(aio.AioRpcError) as unknown:
                    await rpc.generations.GetGeneration(gs.GetGenerationRequest(name=name))
                assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await core.stop(grace=0.0)
        await asyncio.to_thread(redis.close)
