"""gRPC health for the core: a status per service and for "", kept true to the stores' state.

Every dependency the core cannot serve without (the project store, story
knowledge, the shared Redis when configured, and for local storage whether the
SQLite file can be written and its disk has room — server.storage_probes) is
probed every `probe_seconds` (2 s), all at once, each given twice that to
answer; while any of them fails, every service is NOT_SERVING, and SERVING
again once all answer. So a fault shows within probe + timeout (≤ 6 s), and
its end within one probe period after it cleared (≤ 2 s, plus a probe still
waiting on a dead dependency). GenerationService is also NOT_SERVING while no
language-model provider is usable (every circuit breaker open), and SERVING
again once one half-opens.

`scriptgen.liveness` says only that the process answers: SERVING from start to exit,
through dependency outages and the stop's drain. Kubernetes' liveness and startup
probes ask it, so a store outage turns the cores unready, not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Protocol

from grpc_health.v1 import health, health_pb2

from server.errors import ServiceError
from server.metrics import CoreMetrics
from server.providers.router import ProviderRouter

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROJECT_SERVICE = "scriptgen.v1.ProjectService"
GENERATION_SERVICE = "scriptgen.v1.GenerationService"
SERVICES = ("", PROJECT_SERVICE, GENERATION_SERVICE)
#: The process answers (for liveness probes): SERVING whatever the dependencies' state.
LIVENESS_SERVICE = "scriptgen.liveness"


class Probe(Protocol):
    """A dependency that raises a ServiceError (e.g. Unavailable) while it cannot serve."""

    async def ping(self) -> None: ...


class CoreHealth:
    """Owns the health servicer; probes the dependencies and flips statuses on change."""

    def __init__(
        self,
        dependencies: Mapping[str, Probe],
        metrics: CoreMetrics,
        router: ProviderRouter | None = None,
        probe_seconds: float = 2.0,
    ) -> None:
        self.servicer = health.aio.HealthServicer()
        self._dependencies = dict(dependencies)
        self._metrics = metrics
        self._router = router
        self._probe_seconds = probe_seconds
        self._probe: asyncio.Task[None] | None = None
        self._provider_watch: asyncio.Task[None] | None = None
        self._store_ok = True
        self._providers_ok = True
        self._shutting_down = False
        self._published: int | None = None

    async def _publish(self) -> None:
        status = SERVING if self._store_ok and not self._shutting_down else NOT_SERVING
        for service in SERVICES:
            if service == GENERATION_SERVICE and not self._providers_ok:
                status = NOT_SERVING
            await self.servicer.set(service, status)
            if service == "" and status != self._published:
                self._published = status
                self._metrics.readiness_transitions.labels(
                    health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                ).inc()
            self._metrics.serving.labels(service or "all").set(1 if status == SERVING else 0)

    async def start(self) -> None:
        """Publish SERVING and start probing the dependencies."""
        await self.servicer.set(LIVENESS_SERVICE, SERVING)
        await self._publish()
        self._probe = asyncio.create_task(self._watch_store(), name="health probe")
        if self._router is not None:
            self._provider_watch = asyncio.create_task(
                self._watch_providers(self._router), name="provider health"
            )

    async def _watch_providers(self, router: ProviderRouter) -> None:
        while not self._shutting_down:
            router.changed.clear()
            usable = router.usable()
            if usable != self._providers_ok:
                self._providers_ok = usable
                if not usable:
                    log.warning("no language-model provider is usable: every breaker is open")
                await self._publish()
            # Wake on a breaker change, or when an open breaker's cool-down ends.
            wait = router.seconds_until_change()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wait is None else wait + 0.01):
                    await router.changed.wait()

    async def _watch_store(self) -> None:
        while not self._shutting_down:
            await asyncio.sleep(self._probe_seconds)
            names = list(self._dependencies)
            outcomes = await asyncio.gather(
                *(self._ping(self._dependencies[name]) for name in names)
            )
            failing = [name for name, problem in zip(names, outcomes, strict=True) if problem]
            if self._store_ok:
                for name, problem in zip(names, outcomes, strict=True):
                    if problem:
                        log.warning("%s unhealthy: %s", name, problem)
            healthy = not failing
            if healthy and not self._store_ok:
                log.info("every dependency answers again")
            if healthy != self._store_ok:
                self._store_ok = healthy
                await self._publish()

    async def _ping(self, dependency: Probe) -> str | None:
        """What is wrong with `dependency`, or None when it answers in time."""
        try:
            async with asyncio.timeout(self._probe_seconds * 2):
                await dependency.ping()
        except ServiceError as error:
            return error.message
        except TimeoutError:
            return "timed out"
        return None

    async def shut_down(self) -> None:
        """Turn every service NOT_SERVING for good (liveness aside: the process still
        answers while it drains) and stop probing."""
        self._shutting_down = True
        for task in (self._probe, self._provider_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # Not enter_graceful_shutdown(): it would turn liveness NOT_SERVING too. Nothing
        # publishes after this (the watches are stopped, and _publish reads _shutting_down).
        for service in SERVICES:
            await self.servicer.set(service, NOT_SERVING)
            self._metrics.serving.labels(service or "all").set(0)
