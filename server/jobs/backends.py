"""Chooses where jobs live: in memory (the default) or in Redis when `redis_url` is set."""

from __future__ import annotations

from dataclasses import dataclass

from server.config import CoreConfig
from server.events import EventLog, MemoryEventLog, RedisConnection, RedisEventLog, open_redis
from server.events.redis_connection import redis_errors
from server.jobs.coordination import Coordination, MemoryCoordination, RedisCoordination
from server.jobs.redis_registry import RedisJobRegistry
from server.jobs.registry import JobRegistry, MemoryJobRegistry
from server.retention import Retention


@dataclass(frozen=True, slots=True)
class JobBackends:
    """The event log, job registry and coordination of one core, and the Redis they share."""

    event_log: EventLog
    registry: JobRegistry
    coordination: Coordination
    redis: RedisConnection | None = None

    async def open(self) -> None:
        """Check that Redis answers (Unavailable REDIS_UNAVAILABLE when it does not)."""
        if self.redis is not None:
            async with redis_errors():
                await self.redis.client.ping()

    async def ping(self) -> None:
        """Unavailable REDIS_UNAVAILABLE while the shared Redis does not answer."""
        await self.open()

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def build_job_backends(config: CoreConfig) -> JobBackends:
    """In-memory backends, or Redis ones under `config.redis_key_prefix`."""
    retention = config.event_retention_seconds
    if not config.redis_url:
        kept = Retention(seconds=retention, count=config.finished_jobs_kept)
        return JobBackends(
            MemoryEventLog(retention=kept),
            MemoryJobRegistry(retention=kept),
            MemoryCoordination(),
        )
    redis = open_redis(config.redis_url, config.redis_key_prefix, config.redis_retry_seconds)
    return JobBackends(
        RedisEventLog(redis, retention),
        RedisJobRegistry(redis, retention),
        RedisCoordination(redis, config.owner_lease_seconds),
        redis,
    )
