"""Event logs: every event of every job, replayable from any sequence and followable live."""

from server.events.base import (
    TERMINAL_KINDS,
    AppendsAtOnce,
    EventLog,
    EventLogBehind,
    EventLogConflict,
    LeaseFenced,
    LeaseTaken,
    is_terminal,
)
from server.events.memory import MemoryEventLog
from server.events.redis import RedisEventLog
from server.events.redis_connection import RedisConnection, open_redis

__all__ = [
    "TERMINAL_KINDS",
    "AppendsAtOnce",
    "EventLog",
    "EventLogBehind",
    "EventLogConflict",
    "LeaseFenced",
    "LeaseTaken",
    "MemoryEventLog",
    "RedisConnection",
    "RedisEventLog",
    "is_terminal",
    "open_redis",
]
