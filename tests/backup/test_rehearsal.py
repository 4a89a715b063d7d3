"""The restore rehearsal: back up a filled core, wipe it, restore, and time the recovery.

Recovery time is measured from the start of `restore_backup` to the restored
core answering SERVING on grpc.health.v1 — what an operator waits for. It
runs twice: the embedded stores (SQLite, embedded Chroma, jobs in memory),
and the distributed ones (PostgreSQL, a Chroma server, Redis for jobs, event
streams, idempotency keys and limits).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2

from server import Core, CoreConfig
from server.backup import Stores, create_backup, pg_programs, restore_backup
from server.backup.stores import chroma_client
from server.events import open_redis
from server.knowledge.settings import KnowledgeConfig
from server.ratelimit import RedisLimiter
from tests.backends.postgres import fresh_database
from tests.backends.redis import delete_prefixed
from tests.backup.conftest import Filled
from tests.backup.stories import holdings, jobs, populate, redis_view
from tests.conftest import fast_core_config
from tests.server.rpc import health_check

#: What the README promises for a small data dir, with room for slow CI machines.
RECOVERY_BUDGET_SECONDS = 30.0


async def _until_serving(target: str) -> None:
    async with aio.insecure_channel(target) as channel:
        check = health_check(channel)
        while True:
            answer = await check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.01)


def _report(name: str, seconds: float, record_property: Callable[[str, object], None]) -> None:
    record_property(f"recovery_seconds_{name}", round(seconds, 3))
    print(f"\nrecovery time, {name} (restore start to SERVING): {seconds:.3f} s")
    assert seconds < RECOVERY_BUDGET_SECONDS


async def test_restore_rehearsal(
    filled: Filled, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    await create_backup(tmp_path / "nightly", filled.stores)
    shutil.rmtree(filled.config.data_dir)  # the disaster

    started = time.monotonic()
    await restore_backup(tmp_path / "nightly", Stores.from_config(filled.config))
    core = Core(filled.config)
    await core.start()
    try:
        target = f"127.0.0.1:{core.grpc_port}"
        await asyncio.wait_for(_until_serving(target), RECOVERY_BUDGET_SECONDS)
        recovery_seconds = time.monotonic() - started
        assert await holdings(target) == filled.holdings
    finally:
        await core.stop()
    _report("embedded", recovery_seconds, record_property)


@pytest.fixture
async def distributed(
    tmp_path: Path,
    postgres_url: str,
    chroma_url: str,
    chroma_prefix: str,
    redis_url: str,
    redis_prefix: str,
) -> AsyncIterator[CoreConfig]:
    """A core config on PostgreSQL (a fresh database), a Chroma server and Redis."""
    async with fresh_database(postgres_url) as database_url:
        config = replace(
            fast_core_config(tmp_path / "live"),
            database_url=database_url,
            redis_url=redis_url,
            redis_key_prefix=redis_prefix,
            knowledge=KnowledgeConfig(chroma_url=chroma_url, collection_prefix=chroma_prefix),
        )
        try:
            yield config
        finally:
            await asyncio.to_thread(_drop_collections, config)


def _drop_collections(config: CoreConfig) -> None:
    prefix = f"{config.knowledge.collection_prefix}-"
    with chroma_client(config.knowledge.chroma_url, config.data_dir) as client:
        for collection in client.list_collections():
            if collection.name.startswith(prefix):
                client.delete_collection(collection.name)


async def _use_limits(config: CoreConfig) -> None:
    """Rate-limit buckets and a token budget, through the core's own Redis limiter."""
    connection = open_redis(config.redis_url, config.redis_key_prefix, retry_seconds=2.0)
    try:
        limiter = RedisLimiter(connection)
        await limiter.hit("tenant-a", 100, 3600)
        await limiter.reserve_tokens("default", datetime.now(UTC).strftime("%Y-%m-%d"), 500, 10**6)
    finally:
        await connection.aclose()


async def _wipe(config: CoreConfig) -> None:
    """The disaster: the database, the collections, the Redis keys and the data dir, gone."""
    admin = await asyncpg.connect(pg_programs.with_database(config.database_url, "postgres"))
    try:
        name = pg_programs.database_name(config.database_url)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    await asyncio.to_thread(_drop_collections, config)
    delete_prefixed(config.redis_url, config.redis_key_prefix)
    shutil.rmtree(config.data_dir, ignore_errors=True)


async def test_restore_rehearsal_of_postgres_chroma_server_and_redis(
    distributed: CoreConfig, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    config = distributed
    core = Core(config)
    await core.start()
    try:
        target = f"127.0.0.1:{core.grpc_port}"
        await populate(target)
        held, held_jobs = await holdings(target), await jobs(target)
    finally:
        await core.stop()
    await _use_limits(config)
    keys = await redis_view(config.redis_url, config.redis_key_prefix)
    kinds = {key.removeprefix(config.redis_key_prefix).split(":")[0] for key in keys}
    # Job records, their event streams, idempotency keys (`request`) and limits (`rl`).
    assert {"job", "events", "request", "rl"} <= kinds, sorted(keys)
    assert len(held_jobs) == 2
    stores = Stores.from_config(config)
    manifest = await create_backup(tmp_path / "nightly", stores)
    assert manifest["stores"]["database"]["kind"] == "postgresql"
    assert manifest["stores"]["knowledge"]["kind"] == "server"
    assert manifest["stores"]["redis"]["count"] == len(keys)
    await _wipe(config)

    started = time.monotonic()
    await restore_backup(tmp_path / "nightly", stores)
    restored_seconds = time.monotonic() - started
    assert await redis_view(config.redis_url, config.redis_key_prefix) == keys
    started = time.monotonic()
    core = Core(config)
    await core.start()
    try:
        target = f"127.0.0.1:{core.grpc_port}"
        await asyncio.wait_for(_until_serving(target), RECOVERY_BUDGET_SECONDS)
        recovery_seconds = restored_seconds + time.monotonic() - started
        assert await holdings(target) == held
        assert await jobs(target) == held_jobs
    finally:
        await core.stop()
    _report("PostgreSQL + Chroma server + Redis", recovery_seconds, record_property)
