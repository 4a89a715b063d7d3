"""Load-tool fixtures: a real gateway on a TCP port in front of the shared `core` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway import GatewayServer
from tests.gateway.conftest import gateway_config


@pytest.fixture
async def gateway_url(core_target: str) -> AsyncIterator[str]:
    """Base URL of a real gateway whose core is ready."""
    server = GatewayServer(gateway_config(core_target))
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()
