"""Gateway fixtures: a gateway app (in-process test client) or server (real TCP) on a real core."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway import GatewayConfig, GatewayServer, create_app, state
from server import Core
from tests.conftest import CoreFactory as CoreFactory

#: Small intervals so idle pings and readiness changes show within a test.
READINESS_BACKOFF_MAX_SECONDS = 0.5


def gateway_config(core_target: str, **overrides: Any) -> GatewayConfig:
    """A gateway config for tests: ephemeral port, quick pings and reconnects."""
    settings: dict[str, Any] = {
        "core_target": core_target,
        "http_address": "127.0.0.1:0",
        "sse_retry_ms": 1500,
        "ping_interval_seconds": 5.0,
        "readiness_backoff_seconds": 0.05,
        "readiness_backoff_max_seconds": READINESS_BACKOFF_MAX_SECONDS,
        "drain_seconds": 1.0,
    }
    settings.update(overrides)
    return GatewayConfig(**settings)


@pytest.fixture
async def client(core_target: str) -> AsyncIterator[TestClient[Any, Any]]:
    """aiohttp's test client on a gateway app whose core is ready."""
    app = create_app(gateway_config(core_target))
    async with TestClient(TestServer(app)) as test_client:
        await app[state.READINESS].wait_for(True)
        yield test_client


@pytest.fixture
async def gateway(core_target: str) -> AsyncIterator[GatewayServer]:
    """A real gateway server on a TCP port."""
    server = GatewayServer(gateway_config(core_target))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the real gateway server."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{gateway.port}", timeout=30.0
    ) as http_client:
        yield http_client


@asynccontextmanager
async def serve_gateway(core_target: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A real gateway server for `core_target` and an httpx client for it."""
    server = GatewayServer(gateway_config(core_target, **overrides))
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=30.0
        ) as http_client:
            yield http_client
    finally:
        await server.stop()


async def eventually(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Wait until `condition()` holds; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def sample(core: Core, name: str, labels: dict[str, str] | None = None) -> float:
    """A core metric's current value (0 when the series does not exist yet)."""
    return core.metrics.registry.get_sample_value(name, labels or {}) or 0.0
