"""Fixtures of the core's tests: the LLM stand-in the real SDKs talk to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.standins.llm_standin import LlmStandin, running_standin


@pytest.fixture
async def standin() -> AsyncIterator[LlmStandin]:
    """An LLM stand-in on a free port for one test."""
    async with running_standin() as server:
        yield server
