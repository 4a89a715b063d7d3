"""Fixtures for SDK and CLI tests: clients of a real core, a project, a slow-writing core."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from scriptgen import Client, ClientConfig, RetryPolicy
from scriptgen.v1 import project_pb2

from server import Core, SyntheticConfig
from tests.conftest import fast_core_config

#: Retries quick enough for tests, patient enough for a proxy restart.
TEST_RETRY = RetryPolicy(max_attempts=30, initial_backoff=0.05, max_backoff=0.3)


@pytest.fixture
async def client(core_target: str) -> AsyncIterator[Client]:
    """A client of the `core` fixture."""
    async with Client(core_target, ClientConfig(deadline=10.0, retry=TEST_RETRY)) as opened:
        yield opened


@pytest.fixture
async def project(client: Client) -> project_pb2.Project:
    """A fresh project in the `core` fixture."""
    return await client.create_project(
        title="The Lighthouse",
        type=project_pb2.PROJECT_TYPE_THRILLER,
        logline="A keeper finds a stranger's diary washed ashore.",
        language="en",
    )


@pytest.fixture
async def slow_core(tmp_path: Path) -> AsyncIterator[Core]:
    """A core whose synthetic writer takes a couple of seconds per episode.

    Long enough to break a link mid-stream, or to press Ctrl-C, while the job runs.
    """
    config = replace(
        fast_core_config(tmp_path / "slow-core"),
        synthetic=SyntheticConfig(first_token_seconds=0.0, tokens_per_second=80.0),
    )
    running = Core(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def slow_target(slow_core: Core) -> str:
    """host:port of the slow core."""
    return f"127.0.0.1:{slow_core.grpc_port}"


@pytest.fixture
async def slow_client(slow_target: str) -> AsyncIterator[Client]:
    """A client of the slow core."""
    async with Client(slow_target, ClientConfig(retry=TEST_RETRY)) as opened:
        yield opened


@pytest.fixture
def unused_tcp_port() -> int:
    """A loopback port nothing listens on (free when the test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
