"""Job records: the Generation resource of every job, and idempotency keys.

The in-memory registry is the embedded default; a shared one (Redis) lets
several cores see each other's jobs. The in-memory one keeps finished jobs
for a bounded time and number (server.retention), like the in-memory event
log; a dropped job's request_id is forgotten with it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from google.protobuf import timestamp_pb2
from scriptgen.v1 import generation_pb2

from server.auth.records import DEFAULT_TENANT
from server.errors import AlreadyExists, NotFound
from server.retention import FinishedJobs, Retention

_ENDED_STATES = frozenset(
    {
        generation_pb2.GENERATION_STATE_SUCCEEDED,
        generation_pb2.GENERATION_STATE_FAILED,
        generation_pb2.GENERATION_STATE_CANCELLED,
    }
)


class JobRegistry(Protocol):
    """Generation records and the idempotency keys that point at them.

    Every job belongs to the tenant that started it; request_ids are kept per
    tenant. With `tenant=` a call sees only that tenant's jobs (another
    tenant's is NOT_FOUND, like an unknown one); None is the core's own view.
    """

    async def create(
        self,
        generation: generation_pb2.Generation,
        fingerprint: str,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> generation_pb2.Generation:
        """Store a new job; with a request_id already used, the earlier job or AlreadyExists."""

    async def get(self, name: str, *, tenant: str | None = None) -> generation_pb2.Generation:
        """One job; NotFound when unknown, expired or another tenant's."""

    async def update(self, generation: generation_pb2.Generation) -> None:
        """Replace a job's record."""

    async def list(
        self,
        parent: str,
        limit: int,
        after: Sequence[str | int] | None,
        *,
        tenant: str | None = None,
    ) -> tuple[list[generation_pb2.Generation], list[str | int] | None]:
        """Jobs newest first (of one project when `parent` is set, of one tenant when given)."""


def _micros(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.ToMicroseconds()


class MemoryJobRegistry:
    """Jobs in a dict; finished ones dropped by `retention`, idempotency keys with their job
    (and after `key_ttl_seconds` at the latest)."""

    def __init__(
        self, key_ttl_seconds: float = 24 * 3600.0, *, retention: Retention | None = None
    ) -> None:
        self._jobs: dict[str, generation_pb2.Generation] = {}
        self._tenants: dict[str, str] = {}
        self._keys: dict[tuple[str, str], tuple[str, str, float]] = {}
        self._key_of: dict[str, tuple[str, str]] = {}
        self._key_ttl = key_ttl_seconds
        self._finished = FinishedJobs(retention or Retention())

    @property
    def finished_kept(self) -> int:
        """How many finished jobs' records are held now."""
        return len(self._finished)

    def _drop(self, names: list[str]) -> None:
        for name in names:
            self._jobs.pop(name, None)
            self._tenants.pop(name, None)
            key = self._key_of.pop(name, None)
            if key is not None:
                self._keys.pop(key, None)

    async def create(
        self,
        generation: generation_pb2.Generation,
        fingerprint: str,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> generation_pb2.Generation:
        self._drop(self._finished.expired())
        key = (tenant, generation.request_id)
        if generation.request_id:
            now = time.monotonic()
            known = self._keys.get(key)
            if known is not None and now - known[2] < self._key_ttl:
                earlier_name, earlier_fingerprint, _ = known
                if earlier_fingerprint != fingerprint:
                    raise AlreadyExists(
                        f"request_id {generation.request_id!r} was used for a different request",
                        reason="REQUEST_ID_REUSED",
                    )
                return await self.get(earlier_name)
            self._keys[key] = (generation.name, fingerprint, now)
            self._key_of[generation.name] = key
        stored = generation_pb2.Generation()
        stored.CopyFrom(generation)
        self._jobs[generation.name] = stored
        self._tenants[generation.name] = tenant
        return generation

    async def get(self, name: str, *, tenant: str | None = None) -> generation_pb2.Generation:
        job = self._jobs.get(name)
        if job is None or (tenant is not None and self._tenants.get(name) != tenant):
            raise NotFound("generation", name, "GENERATION_NOT_FOUND")
        copy = generation_pb2.Generation()
        copy.CopyFrom(job)
        return copy

    async def update(self, generation: generation_pb2.Generation) -> None:
        if generation.name not in self._jobs:
            return  # dropped already (or never stored): nothing to keep current
        stored = generation_pb2.Generation()
        stored.CopyFrom(generation)
        self._jobs[generation.name] = stored
        if generation.state in _ENDED_STATES:
            self._drop(self._finished.ended(generation.name))

    async def list(
        self,
        parent: str,
        limit: int,
        after: Sequence[str | int] | None,
        *,
        tenant: str | None = None,
    ) -> tuple[list[generation_pb2.Generation], list[str | int] | None]:
        ordered = sorted(
            (
                job
                for job in self._jobs.values()
                if (not parent or job.parent == parent)
                and (tenant is None or self._tenants.get(job.name) == tenant)
            ),
            key=lambda job: (_micros(job.create_time), job.name),
            reverse=True,
        )
        if after is not None:
            position = (int(after[0]), str(after[1]))
            ordered = [j for j in ordered if (_micros(j.create_time), j.name) < position]
        page = ordered[:limit]
        copies = []
        for job in page:
            copy = generation_pb2.Generation()
            copy.CopyFrom(job)
            copies.append(copy)
        if len(ordered) > limit:
            last = page[-1]
            return copies, [_micros(last.create_time), last.name]
        return copies, None
