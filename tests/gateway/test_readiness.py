"""/readyz follows the core's Health.Watch: down when the core stops, up when one returns."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway import create_app
from server import Core
from tests.conftest import fast_core_config
from tests.gateway.conftest import gateway_config


async def _wait_for_status(client: TestClient[Any, Any], status: int, seconds: float) -> float:
    started = time.monotonic()
    while (await client.get("/readyz")).status != status:
        assert time.monotonic() - started < seconds, f"/readyz never answered {status}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            if metric.name == name and metric.labels == (labels or {}):
                return metric.value
    raise AssertionError(f"no sample {name}{labels or ''}")


async def test_readyz_follows_the_core_going_away_and_coming_back(tmp_path: Path) -> None:
    first = Core(fast_core_config(tmp_path / "first"))
    await first.start()
    port = first.grpc_port
    app = create_app(gateway_config(f"127.0.0.1:{port}"))
    second: Core | None = None
    try:
        async with TestClient(TestServer(app)) as client:
            await _wait_for_status(client, 200, 5.0)
            assert (await client.get("/healthz")).status == 200

            await first.stop()
            await _wait_for_status(client, 503, 5.0)
            assert (await client.get("/healthz")).status == 200, "liveness ignores the core"
            not_ready = await client.get("/readyz")
            assert not_ready.headers["Retry-After"] == "1"
            metrics = await (await client.get("/metrics")).text()
            assert _metric(metrics, "scriptgen_gateway_ready") == 0

            # Calls fail fast and clearly while no core is there.
            unavailable = await client.get("/v1/projects")
            assert unavailable.status == 503
            assert (await unavailable.json())["error"]["status"] == "UNAVAILABLE"

            config = dataclasses.replace(
                fast_core_config(tmp_path / "second"), grpc_address=f"127.0.0.1:{port}"
            )
            second = Core(config)
            await second.start()
            await _wait_for_status(client, 200, 10.0)
            metrics = await (await client.get("/metrics")).text()
            assert _metric(metrics, "scriptgen_gateway_ready") == 1
            transitions = "scriptgen_gateway_readiness_transitions_total"
            assert _metric(metrics, transitions, {"to": "ready"}) == 2
            assert _metric(metrics, transitions, {"to": "not_ready"}) == 1
            assert (await client.get("/v1/projects")).status == 200
    finally:
        if second is not None:
            await second.stop()
        else:
            await first.stop()


async def test_readyz_is_503_while_no_core_was_ever_reachable(tmp_path: Path) -> None:
    app = create_app(gateway_config("127.0.0.1:1"))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await client.get("/healthz")).status == 200
