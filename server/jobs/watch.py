"""The owner's rounds over its jobs: renew leases, act on cancel requests, end abandoned jobs.

Every `tick_seconds` (0.2 s) the core that runs jobs asks the coordination
for cancel requests addressed to them — so a cancel from any replica stops
the provider call well within a second — and counts each job's readers. A
job that is not detached and has had no reader for `abandon_after_seconds`
is cancelled.

Leases are renewed on a task of their own, every third of their length, so a
slow cancel or reader query never holds a renewal up. A renewal not answered
within that third is abandoned (redis-py closes its connection) and sent again
at once on another: against the default lease of 10 s, one slow Redis reply
(up to the 7 s socket timeout) costs a retry, not the lease; only renewals
failing for a whole lease lose it. A job whose lease another core took (it
thought this one gone, and ends the job) is stopped without a word of its own,
unless it is already saving its episode.
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
        #: Between two renewals, and how long one may take before it is sent again.
        self._renew_every = max(tick_seconds, lease_seconds / 3)
        self._tick = tick_seconds
        self._unread_since: dict[str, float] = {}
        self._cancelling: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._rounds(), name="job watch"),
                asyncio.create_task(self._renewals(), name="job leases"),
            ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._cancelling.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._cancelling.clear()

    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            jobs = dict(self._running())
            for gone in set(self._unread_since) - set(jobs):
                del self._unread_since[gone]
            if not jobs:
                continue
            now = time.monotonic()
            try:
                for name, reason in (await self._coordination.cancel_requests(list(jobs))).items():
                    self._start_cancel(name, reason)
                if self._abandon_after > 0:
                    await self._check_readers(jobs, now)
            except ServiceError as error:
                log.warning("job watch round failed: %s", error.message)

    async def _renewals(self) -> None:
        """Renew the leases every `renew_every` from the last renewal sent that Redis
        answered; one not answered within `renew_every` is sent again after a tick."""
        await asyncio.sleep(self._renew_every)
        while True:
            sent = time.monotonic()
            if await self._renewed():
                await asyncio.sleep(max(0.0, sent + self._renew_every - time.monotonic()))
            else:
                await asyncio.sleep(self._tick)

    async def _renewed(self) -> bool:
        """One renewal of every running job's lease; whether Redis answered it."""
        jobs = list(self._running())
        if not jobs:
            return True
        try:
            async with asyncio.timeout(self._renew_every):
                lost = await self._coordination.renew(jobs)
        except TimeoutError:
            log.warning(
                "renewing %d job leases took over %.1fs; sending it again",
                len(jobs),
                self._renew_every,
            )
            return False
        except ServiceError as error:
            log.warning("renewing %d job leases failed: %s", len(jobs), error.message)
            return False
        except Exception:
            # A refusal Redis explains (READONLY in a failover, OOM, MISCONF) is no outage
            # to redis_errors, but must not end the renewals: every lease would lapse.
            log.exception("renewing %d job leases failed", len(jobs))
            return False
        running = set(self._running())
        for name, how in lost.items():
            if name not in running:
                continue  # it ended while the renewal ran: its release stands
            if self._lost(name, how):
                self._start_cancel(name, LEASE_LOST_REASON)
        return True

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
