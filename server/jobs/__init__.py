"""Generation jobs: their records, their event emission, their pipeline and their runner."""

from server.jobs.registry import JobRegistry, MemoryJobRegistry
from server.jobs.runner import JobRunner

__all__ = ["JobRegistry", "JobRunner", "MemoryJobRegistry"]
