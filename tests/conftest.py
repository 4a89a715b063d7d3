"""Shared fixtures: a real core on port 0 with a fast synthetic writer."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from server import Core, CoreConfig, SyntheticConfig
from server.auth import AuthConfig
from tests.backends.postgres import postgres_url  # noqa: F401
from tests.backends.redis import (  # noqa: F401
    own_redis,
    own_redis_connection,
    redis_connection,
    redis_prefix,
    redis_url,
)


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


@pytest.fixture(autouse=True)
def no_api_key_from_the_shell() -> Iterator[None]:
    """The SDK reads SCRIPTGEN_API_KEY when a config names no key: a developer's exported
    key must not reach the tests' clients (tests that want it set it themselves).

    Not through `monkeypatch`: an autouse fixture asking for it would set it up before
    every other fixture, so a test's own patches would be undone only after those
    fixtures' teardowns, which may call what the test patched."""
    exported = os.environ.pop("SCRIPTGEN_API_KEY", None)
    yield
    if exported is not None:
        os.environ["SCRIPTGEN_API_KEY"] = exported


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    """A running core, stopped after the test."""
    running = Core(fast_core_config(tmp_path / "core"))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


class CoreFactory(Protocol):
    """Starts a core with the given synthetic writer and other `CoreConfig` fields."""

    def __call__(self, synthetic: SyntheticConfig, **overrides: Any) -> Awaitable[Core]: ...


@pytest.fixture
async def start_core(tmp_path: Path) -> AsyncIterator[CoreFactory]:
    """Start cores with a given synthetic writer; all are stopped after the test."""
    started: list[Core] = []

    async def start(synthetic: SyntheticConfig, **overrides: Any) -> Core:
        config = dataclasses.replace(
            fast_core_config(tmp_path / f"core-{len(started)}"), synthetic=synthetic, **overrides
        )
        running = Core(config)
        await running.start()
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in reversed(started):
            await running.stop()


@pytest.fixture
def core_target(core: Core) -> str:
    """host:port of the running core's gRPC server."""
    return f"127.0.0.1:{core.grpc_port}"


LINGERING_THREAD_GRACE_SECONDS = 10.0


def pytest_unconfigure(config: pytest.Config) -> None:
    """Fail, instead of hanging at exit, when a test left a non-daemon thread running.

    The interpreter joins every non-daemon thread before it exits, so one that
    never ends (an aiosqlite connection nobody closed waits on its queue forever)
    would hold the whole run until CI's time limit.
    """
    deadline = time.monotonic() + LINGERING_THREAD_GRACE_SECONDS
    while True:
        lingering = [
            thread
            for thread in threading.enumerate()
            if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
        ]
        if not lingering or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not lingering:
        return
    frames = sys._current_frames()
    print(f"\n{len(lingering)} non-daemon thread(s) outlived the tests:", file=sys.stderr)
    for thread in lingering:
        print(f"--- {thread.name}", file=sys.stderr)
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            traceback.print_stack(frame, file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(3)
