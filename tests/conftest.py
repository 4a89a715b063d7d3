"""Shared fixtures: a real core on port 0 with a fast synthetic writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server import Core, CoreConfig, SyntheticConfig
from server.auth import AuthConfig
from tests.backends.postgres import postgres_url  # noqa: F401
from tests.backends.redis import redis_connection, redis_prefix, redis_url  # noqa: F401


def fast_core_config(data_dir: Path) -> CoreConfig:
    """A core config for tests: ephemeral ports, a synthetic writer with no delays.

    API keys are off (loopback only, as SCRIPTGEN_AUTH=disabled allows): these tests are
    about everything else. tests/security runs the same cores with auth on.
    """
    return CoreConfig(
        data_dir=data_dir,
        grpc_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        synthetic=SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0),
        heartbeat_seconds=1.0,
        shutdown_grace_seconds=2.0,
        auth=AuthConfig(enabled=False),
    )


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    """A running core, stopped after the test."""
    running = Core(fast_core_config(tmp_path / "core"))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def core_target(core: Core) -> str:
    """host:port of the running core's gRPC server."""
    return f"127.0.0.1:{core.grpc_port}"
