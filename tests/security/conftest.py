"""Fixtures with API keys ON: a core, keys of two tenants, a gateway in front of it."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpc import aio

from gateway import GatewayServer
from server import Core, logs
from server.auth import AuthConfig, LimitDefaults, new_key
from server.store.records import now_micros
from tests.conftest import fast_core_config
from tests.gateway.conftest import gateway_config
from tests.server.rpc import Stubs
from tests.server.store.conftest import make_store  # noqa: F401 (both store backends)

#: Generous limits, so only the tests about limits meet them.
ROOMY = LimitDefaults(requests_per_window=10_000, window_seconds=60, max_streams=100)


def secure_config(data_dir: Path, **auth: Any) -> Any:
    """fast_core_config with auth on (short key cache, roomy limits unless overridden)."""
    settings: dict[str, Any] = {"enabled": True, "key_cache_seconds": 0.2, "limits": ROOMY}
    settings.update(auth)
    return dataclasses.replace(fast_core_config(data_dir), auth=AuthConfig(**settings))


async def make_key(core: Core, tenant: str, scopes: tuple[str, ...] = ("read", "write")) -> str:
    """A new key of `tenant` stored in `core`'s project store; its plaintext."""
    plaintext, record = new_key(tenant, scopes, create_time=now_micros())
    await core.store.create_key(record)
    return plaintext


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


class KeyedStubs(Stubs):
    """Stubs whose every call sends one API key."""


@pytest.fixture
async def secure_core(tmp_path: Path) -> AsyncIterator[Core]:
    running = Core(secure_config(tmp_path / "secure-core"))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def secure_target(secure_core: Core) -> str:
    return f"127.0.0.1:{secure_core.grpc_port}"


@pytest.fixture
async def alice_key(secure_core: Core) -> str:
    return await make_key(secure_core, "alice")


@pytest.fixture
async def bob_key(secure_core: Core) -> str:
    return await make_key(secure_core, "bob")


@pytest.fixture
async def channel(secure_target: str) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(secure_target) as opened:
        yield opened


KeyedClient = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def secure_gateway(secure_target: str) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(gateway_config(secure_target, cors_origins=("https://writers.example",)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http(secure_gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of the secure gateway, with no key."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{secure_gateway.port}", timeout=30.0
    ) as client:
        yield client


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The process's real log setup (`server.logs.configure`, JSON) writing into a buffer.

    Yields a function returning the JSON lines written so far; the previous setup is
    restored after the test.
    """
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    logs.configure("json", "INFO", stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "scriptgen"]:
            root.removeHandler(handler)
        root.setLevel(level)


def unused_port() -> int:
    """A TCP port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
