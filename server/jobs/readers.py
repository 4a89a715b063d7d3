"""Reader presence: the leases of this process's open event streams, kept by one sweep.

Every open stream of a job is a reader with a short lease (server.jobs.coordination),
so a job's owner can tell a followed job from an abandoned one even across cores.
Rather than a timer per stream, one sweep per process renews every open reader's
lease in a single round trip every third of the lease, and every owner lease's
length asks the runner to end the followed jobs whose core is gone. The sweep runs
only while some stream is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from server.errors import ServiceError
from server.jobs.coordination import READER_LEASE_SECONDS, Coordination

log = logging.getLogger(__name__)


class _Runner(Protocol):
    @property
    def coordination(self) -> Coordination: ...

    @property
    def owner_lease_seconds(self) -> float: ...

    async def end_orphan(self, name: str, cancel_reason: str = "") -> bool: ...


class ReaderPresence:
    """Counts this process's open streams as readers of their jobs while they are open."""

    def __init__(self, runner: _Runner, renew_seconds: float = READER_LEASE_SECONDS / 3) -> None:
        self._runner = runner
        self._renew_seconds = renew_seconds
        self._open: set[tuple[str, str]] = set()
        self._sweep: asyncio.Task[None] | None = None
        self._sleeping = False

    @property
    def open(self) -> int:
        """Streams counted now."""
        return len(self._open)

    async def enter(self, name: str) -> str:
        """Count a new reader of job `name`; its token for `leave`."""
        token = await self._runner.coordination.reader_enter(name)
        self._open.add((name, token))
        if self._sweep is None:
            self._sweep = asyncio.create_task(self._run(), name="reader presence")
        return token

    async def leave(self, name: str, token: str) -> None:
        """Stop counting a reader (its stream ended)."""
        self._open.discard((name, token))
        if not self._open and self._sweep is not None and self._sleeping:
            # Idle between rounds: nothing is cut short. A busy round ends by itself.
            self._sweep.cancel()
            self._sweep = None
        with contextlib.suppress(ServiceError):
            await self._runner.coordination.reader_leave(name, token)

    async def _run(self) -> None:
        orphans_checked = time.monotonic()
        try:
            while self._open:
                self._sleeping = True
                try:
                    await asyncio.sleep(self._renew_seconds)
                finally:
                    self._sleeping = False
                readers = list(self._open)
                try:
                    await self._runner.coordination.readers_renew(readers)
                except ServiceError as error:
                    # Redis trouble: the streams themselves report it.
                    log.debug("renewing %d reader leases failed: %s", len(readers), error)
                now = time.monotonic()
                if now - orphans_checked >= self._runner.owner_lease_seconds:
                    orphans_checked = now
                    await self._end_orphans({name for name, _ in readers})
        finally:
            if self._sweep is asyncio.current_task():
                self._sweep = None

    async def _end_orphans(self, names: set[str]) -> None:
        for name in names:
            with contextlib.suppress(ServiceError):
                await self._runner.end_orphan(name)
