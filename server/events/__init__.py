"""Event logs: every event of every job, replayable from any sequence and followable live."""

from server.events.base import TERMINAL_KINDS, EventLog, is_terminal
from server.events.memory import MemoryEventLog

__all__ = ["TERMINAL_KINDS", "EventLog", "MemoryEventLog", "is_terminal"]
