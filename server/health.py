"""gRPC health for the core: a status per service and for "", kept true to the stores' state."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health, health_pb2

from server.errors import ServiceError
from server.metrics import CoreMetrics
from server.store.base import ProjectStore

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROJECT_SERVICE = "scriptgen.v1.ProjectService"
GENERATION_SERVICE = "scriptgen.v1.GenerationService"
SERVICES = ("", PROJECT_SERVICE, GENERATION_SERVICE)


class CoreHealth:
    """Owns the health servicer; probes the project store and flips statuses on change."""

    def __init__(
        self, store: ProjectStore, metrics: CoreMetrics, probe_seconds: float = 2.0
    ) -> None:
        self.servicer = health.aio.HealthServicer()
        self._store = store
        self._metrics = metrics
        self._probe_seconds = probe_seconds
        self._probe: asyncio.Task[None] | None = None
        self._store_ok = True
        self._shutting_down = False

    async def _publish(self) -> None:
        status = SERVING if self._store_ok and not self._shutting_down else NOT_SERVING
        for service in SERVICES:
            await self.servicer.set(service, status)
            self._metrics.serving.labels(service or "all").set(1 if status == SERVING else 0)

    async def start(self) -> None:
        """Publish SERVING and start probing the store."""
        await self._publish()
        self._probe = asyncio.create_task(self._watch_store(), name="health probe")

    async def _watch_store(self) -> None:
        while not self._shutting_down:
            await asyncio.sleep(self._probe_seconds)
            try:
                await self._store.ping()
                healthy = True
            except ServiceError as error:
                healthy = False
                if self._store_ok:
                    log.warning("project store unhealthy: %s", error.message)
            if healthy != self._store_ok:
                self._store_ok = healthy
                await self._publish()

    async def shut_down(self) -> None:
        """Turn every service NOT_SERVING for good and stop probing."""
        self._shutting_down = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.servicer.enter_graceful_shutdown()
        for service in SERVICES:
            self._metrics.serving.labels(service or "all").set(0)
