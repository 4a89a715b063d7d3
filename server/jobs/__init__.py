"""Generation jobs: their records, their event emission, their pipeline and their runner."""

from server.jobs.coordination import Coordination, MemoryCoordination, RedisCoordination
from server.jobs.redis_registry import RedisJobRegistry
from server.jobs.registry import JobRegistry, MemoryJobRegistry
from server.jobs.runner import JobRunner

__all__ = [
    "Coordination",
    "JobRegistry",
    "JobRunner",
    "MemoryCoordination",
    "MemoryJobRegistry",
    "RedisCoordination",
    "RedisJobRegistry",
]
