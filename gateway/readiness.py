"""Readiness from the core's `grpc.health.v1.Health/Watch` on service "".

One background subscription follows the core's overall health as the core
pushes it; when the core goes away the watch fails, readiness drops, and the
watch is re-opened with exponential backoff until a core answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from gateway.metrics import GatewayMetrics

_log = logging.getLogger(__name__)

_WATCH_METHOD = "/grpc.health.v1.Health/Watch"
_SERVING = health_pb2.HealthCheckResponse.SERVING


class Readiness:
    """Whether the core says it is SERVING, kept current by a health watch."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metrics: GatewayMetrics,
        *,
        backoff_seconds: float,
        backoff_max_seconds: float,
    ) -> None:
        self._watch = channel.unary_stream(
            _WATCH_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        self._metrics = metrics
        self._backoff = backoff_seconds
        self._backoff_max = backoff_max_seconds
        self._ready = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        metrics.ready.set(0)

    @property
    def ready(self) -> bool:
        return self._ready

    async def wait_for(self, ready: bool) -> None:
        """Return once readiness equals `ready` (for startup and tests)."""
        while self._ready is not ready:
            self._changed.clear()
            await self._changed.wait()

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="scriptgen-readiness-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _set(self, ready: bool) -> None:
        if ready is self._ready:
            return
        self._ready = ready
        self._metrics.ready.set(1 if ready else 0)
        self._metrics.readiness_transitions.labels(to="ready" if ready else "not_ready").inc()
        _log.info("core is %s", "ready" if ready else "not ready")
        self._changed.set()

    async def _follow(self) -> None:
        delay = self._backoff
        while True:
            call = self._watch(health_pb2.HealthCheckRequest(service=""))
            try:
                async for response in call:
                    self._set(response.status == _SERVING)
                    delay = self._backoff
            except grpc.aio.AioRpcError as error:
                _log.debug("health watch ended: %s", error.code().name)
            finally:
                call.cancel()
            # A watch that ends, cleanly or not, means the core is going away.
            self._set(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)
