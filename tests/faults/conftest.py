"""Fault-suite fixtures: LLM stand-ins and cores whose provider chain points at them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from server import Core
from server.config import RouterConfig, build_providers
from tests.conftest import fast_core_config
from tests.standins.llm_standin import LlmStandin, running_standin


@pytest.fixture
async def openai_standin() -> AsyncIterator[LlmStandin]:
    """The stand-in playing OpenAI (a process of its own, so it can die alone)."""
    async with running_standin() as server:
        yield server


@pytest.fixture
async def anthropic_standin() -> AsyncIterator[LlmStandin]:
    """The stand-in playing Anthropic."""
    async with running_standin() as server:
        yield server


@pytest.fixture
async def failover_core(
    tmp_path: Path, openai_standin: LlmStandin, anthropic_standin: LlmStandin
) -> AsyncIterator[Core]:
    """A core whose chain is openai (first stand-in) then anthropic (second stand-in)."""
    providers = build_providers(
        chain="openai,anthropic",
        openai_api_key="test",
        openai_base_url=f"{openai_standin.url}/v1",
        openai_model="gpt-test",
        anthropic_api_key="test",
        anthropic_base_url=anthropic_standin.url,
        anthropic_model="claude-test",
        router=RouterConfig(
            max_attempts=1,
            breaker_failures=100,
            breaker_cooldown_seconds=0.5,
            first_token_timeout_seconds=0.5,
            idle_timeout_seconds=1.0,
        ),
    )
    running = Core(replace(fast_core_config(tmp_path / "core"), providers=providers))
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.0)
