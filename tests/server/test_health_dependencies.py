"""Readiness follows the dependencies: a Redis outage turns the core NOT_SERVING, and back."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2

from server import Core
from server.health import LIVENESS_SERVICE
from tests.backends.redis import throwaway_redis
from tests.conftest import fast_core_config
from tests.server.rpc import health_check, health_watch, read

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _next_status(
    watch: aio.UnaryStreamCall[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
) -> int:
    pending = read(watch)
    update = await asyncio.wait_for(pending, 15)
    assert update is not None
    return int(update.status)


async def test_a_redis_outage_turns_every_service_not_serving_until_it_returns(
    tmp_path: Path,
) -> None:
    with throwaway_redis() as redis:
        config = replace(
            fast_core_config(tmp_path / "core"),
            metrics_address=None,
            redis_url=redis.url,
            redis_key_prefix="health-test:",
        )
        core = Core(config)
        await core.start()
        try:
            async with aio.insecure_channel(f"127.0.0.1:{core.grpc_port}") as channel:
                watches = {
                    service: health_watch(channel)(health_pb2.HealthCheckRequest(service=service))
                    for service in ("", "scriptgen.v1.ProjectService")
                }
                for watch in watches.values():
                    assert await _next_status(watch) == SERVING
                redis.stop()
                for watch in watches.values():
                    assert await _next_status(watch) == NOT_SERVING
                # Liveness says the process answers, whatever its stores: not restarted.
                alive = await health_check(channel)(
                    health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE)
                )
                assert alive.status == SERVING
                redis.start()
                for watch in watches.values():
                    assert await _next_status(watch) == SERVING
            registry = core.metrics.registry
            name = "scriptgen_core_readiness_transitions_total"
            assert registry.get_sample_value(name, {"status": "SERVING"}) == 2
            assert registry.get_sample_value(name, {"status": "NOT_SERVING"}) == 1
        finally:
            await core.stop(grace=0.0)
