"""The API key against a real core with keys on: sent once, from the config or
SCRIPTGEN_API_KEY, never in `config.metadata`; RATE_LIMITED reads are retried after the
core's RetryInfo, writes are not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from scriptgen import Client, ClientConfig, ResourceExhaustedError, UnauthenticatedError

from server import Core
from server.auth import AuthConfig, LimitDefaults, new_key
from server.store.records import now_micros
from tests.conftest import fast_core_config

#: A key of the right shape that the core never issued.
UNKNOWN_KEY = "sg_k000000000000_" + "0" * 48


async def _keyed_core(data_dir: Path, limits: LimitDefaults) -> Core:
    auth = AuthConfig(enabled=True, key_cache_seconds=0.2, limits=limits)
    running = Core(replace(fast_core_config(data_dir), auth=auth))
    await running.start()
    return running


async def _key(core: Core) -> str:
    plaintext, record = new_key("alice", ("read", "write"), create_time=now_micros())
    await core.store.create_key(record)
    return plaintext


@pytest.fixture
async def keyed_core(tmp_path: Path) -> AsyncIterator[Core]:
    roomy = LimitDefaults(requests_per_window=10_000, window_seconds=60, max_streams=100)
    running = await _keyed_core(tmp_path / "keyed-core", roomy)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def keyed_target(keyed_core: Core) -> str:
    return f"127.0.0.1:{keyed_core.grpc_port}"


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRIPTGEN_API_KEY", raising=False)


async def test_a_config_copied_with_another_key_sends_that_key_alone(
    keyed_core: Core, keyed_target: str
) -> None:
    key = await _key(keyed_core)
    async with Client(keyed_target, ClientConfig(api_key=UNKNOWN_KEY)) as old:
        with pytest.raises(UnauthenticatedError):
            await old.list_projects()
        assert old.config.metadata == ()
        async with Client(config=replace(old.config, api_key=key)) as new:
            assert list((await new.list_projects()).projects) == []
            assert new.config.metadata == ()
            assert key not in repr(new.config)


def test_an_authorization_entry_beside_an_api_key_is_refused() -> None:
    config = ClientConfig(api_key=UNKNOWN_KEY, metadata=(("authorization", "Bearer other"),))
    with pytest.raises(ValueError, match="api_key") as raised:
        Client(config=config)
    assert "authorization" in str(raised.value)


async def test_the_key_comes_from_scriptgen_api_key_when_the_config_has_none(
    keyed_core: Core, keyed_target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await _key(keyed_core)
    async with Client(keyed_target) as without:
        with pytest.raises(UnauthenticatedError):
            await without.list_projects()
    monkeypatch.setenv("SCRIPTGEN_API_KEY", key)
    async with Client(keyed_target) as client:
        assert list((await client.list_projects()).projects) == []
        assert client.config.api_key == key
    # The config's own key, or its own authorization entry, wins over the environment.
    async with Client(keyed_target, ClientConfig(api_key=UNKNOWN_KEY)) as configured:
        with pytest.raises(UnauthenticatedError):
            await configured.list_projects()
    monkeypatch.setenv("SCRIPTGEN_API_KEY", UNKNOWN_KEY)
    own = ClientConfig(metadata=(("authorization", f"Bearer {key}"),))
    async with Client(keyed_target, own) as client:
        assert list((await client.list_projects()).projects) == []
        assert client.config.api_key == ""


async def test_rate_limited_reads_wait_the_retry_info_and_writes_are_not_retried(
    tmp_path: Path,
) -> None:
    # Two calls in 4 s: the bucket holds two, and one comes back every 2 s (slow enough
    # that three calls in a row meet an empty bucket even on a loaded machine).
    tight = LimitDefaults(requests_per_window=2, window_seconds=4, max_streams=10)
    core = await _keyed_core(tmp_path / "tight-core", tight)
    try:
        key = await _key(core)
        async with Client(f"127.0.0.1:{core.grpc_port}", ClientConfig(api_key=key)) as client:
            await client.list_projects()
            await client.list_projects()
            started = time.monotonic()
            page = await client.list_projects()  # refused RATE_LIMITED, then tried again
            waited = time.monotonic() - started
            assert list(page.projects) == []
            assert waited >= 1.0, "the retry waited for the core's RetryInfo, not 0.1 s"
            started = time.monotonic()
            with pytest.raises(ResourceExhaustedError) as raised:
                await client.delete_project("projects/nowhere")
            assert time.monotonic() - started < 0.3
            assert raised.value.reason == "RATE_LIMITED"
            assert raised.value.retry_delay is not None
    finally:
        await core.stop()
