"""A live core + gateway with API keys on, in a thread of its own, for the sync fuzzers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from gateway import GatewayServer
from server import Core
from tests.gateway.conftest import gateway_config
from tests.security.conftest import make_key, secure_config


@dataclass
class Live:
    """Where the servers listen, and a key of tenant `fuzz`."""

    http: str = ""
    grpc: str = ""
    key: str = ""
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    failures: list[BaseException] = field(default_factory=list)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("fuzz")
    ready = threading.Event()
    state = Live()

    async def serve() -> None:
        core = Core(secure_config(folder / "core"))
        await core.start()
        gateway = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}"))
        await gateway.start()
        try:
            state.key = await make_key(core, "fuzz", ("read", "write", "admin"))
            state.http = f"http://127.0.0.1:{gateway.port}"
            state.grpc = f"127.0.0.1:{core.grpc_port}"
            state.loop = asyncio.get_running_loop()
            state.stop = asyncio.Event()
            ready.set()
            await state.stop.wait()
        finally:
            await gateway.stop()
            await core.stop()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as error:  # surfaced to the test
            state.failures.append(error)
            ready.set()

    thread = threading.Thread(target=run, name="fuzz servers", daemon=True)
    thread.start()
    assert ready.wait(30), "the servers did not start"
    if state.failures:
        raise state.failures[0]
    yield state
    assert state.loop is not None and state.stop is not None
    state.loop.call_soon_threadsafe(state.stop.set)
    thread.join(30)
