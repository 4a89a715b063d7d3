"""The owner's rounds over its jobs: renew leases, act on cancel requests, end abandoned jobs.

Every `tick_seconds` (0.2 s) the core that runs jobs asks the coordination
for cancel requests addressed to them — so a cancel from any replica stops
the provider call well within a second — and counts each job's readers. A
job that is not detached and has had no reader for `abandon_after_seconds`
is cancelled. Leases are renewed every third of their length; a job whose
lease another core took (it thought this one gone, and ends the job) is
stopped without a word of its own, unless it is already saving its episode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from server.errors import ServiceError
from server.jobs.coordination import Coordination, LeaseLoss

log = logging.getLogger(__name__)
#: Seconds between two rounds.
TICK_SECONDS = 0.2


#: The `cancelled.reason` a job stopped for a lost lease would have had (it writes no end).
LEASE_LOST_REASON = "this core lost the job's lease: another core ends it"


def abandoned_reason(seconds: float) -> str:
    """The `cancelled.reason` of a job nobody followed for `seconds`."""
    return f"abandoned: nobody followed the job for {seconds:g} s and it is not detached"


class JobWatch:
    """Runs the rounds for one core until stopped."""

    def __init__(
        self,
        coordination: Coordination,
        running: Callable[[], Mapping[str, bool]],
        cancel: Callable[[str, str], Awaitable[object]],
        *,
        lost: Callable[[str, LeaseLoss], bool] = lambda *_: True,
        abandon_after_seconds: float,
        lease_seconds: float,
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self._coordination = coordination
        self._running = running
        self._cancel = cancel
        #: Told of a job whose lease this core lost, and how; whether to stop it.
        self._lost = lost
        self._abandon_after = abandon_after_seconds
        self._renew_every = max(tick_seconds, lease_seconds / 3)
        self._tick = tick_seconds
        self._unread_since: dict[str, float] = {}
        self._cancelling: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._rounds(), name="job watch")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._cancelling.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._cancelling.clear()

    async def _rounds(self) -> None:
        renewed = 0.0
        while True:
            await asyncio.sleep(self._tick)
            jobs = dict(self._running())
            for gone in set(self._unread_since) - set(jobs):
                del self._unread_since[gone]
            if not jobs:
                continue
            now = time.monotonic()
            try:
                if now - renewed >= self._renew_every:
                    lost = await self._coordination.renew(list(jobs))
                    renewed = now
                    for name, how in lost.items():
                        if self._lost(name, how):
                            self._start_cancel(name, LEASE_LOST_REASON)
                for name, reason in (await self._coordination.cancel_requests(list(jobs))).items():
                    self._start_cancel(name, reason)
                if self._abandon_after > 0:
                    await self._check_readers(jobs, now)
            except ServiceError as error:
                log.warning("job watch round failed: %s", error.message)

    async def _check_readers(self, jobs: Mapping[str, bool], now: float) -> None:
        attached = [name for name, detach in jobs.items() if not detach]
        counts = await self._coordination.readers(attached)
        for name in attached:
            if counts.get(name, 0) > 0:
                self._unread_since.pop(name, None)
                continue
            since = self._unread_since.setdefault(name, now)
            if now - since >= self._abandon_after:
                log.info("%s: no reader for %.1fs; cancelling", name, now - since)
                self._start_cancel(name, abandoned_reason(self._abandon_after))

    def _start_cancel(self, name: str, reason: str) -> None:
        if name in self._cancelling:
            return
        task = asyncio.create_task(self._cancel_quietly(name, reason), name=f"cancel {name}")
        self._cancelling[name] = task
        task.add_done_callback(lambda _: self._cancelling.pop(name, None))

    async def _cancel_quietly(self, name: str, reason: str) -> None:
        try:
            await self._cancel(name, reason)
        except ServiceError as error:
            log.warning("%s: cancelling failed: %s", name, error.message)
