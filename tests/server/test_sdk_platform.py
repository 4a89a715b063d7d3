"""A burst of first requests on fresh SDK clients hands nothing to the loop's thread pool.

The stand-in is on an IP address: a host name would be looked up once on the pool
(aiohttp's resolver, cached), which is not what these tests are about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import anthropic._base_client
import openai._base_client
import pytest
from scriptgen.v1 import generation_pb2, project_pb2

from server.config import SyntheticConfig, build_providers
from server.knowledge.embedders import OpenAIEmbedder
from server.providers.base import Brief, Prompt, Provider, TokenUsage
from server.providers.factory import StageProviders
from server.providers.factory import build_providers as build_stage_providers
from tests.standins.llm_standin import LlmStandin

PROMPT = Prompt(
    generation_pb2.STAGE_WRITE,
    "system",
    "user",
    Brief(project_pb2.Project(name="projects/p", title="P"), "T", "", 1),
)
BURST = 20


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting what is handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _stages(standin: LlmStandin, chain: str) -> StageProviders:
    config = build_providers(
        chain=chain,
        openai_api_key="test",
        openai_base_url=f"{standin.url}/v1",
        anthropic_api_key="test",
        anthropic_base_url=standin.url,
        local_base_url=f"{standin.url}/v1",
    )
    return build_stage_providers(config, SyntheticConfig())


async def _burst(provider: Provider) -> int:
    """Run BURST calls at once on the running loop; how many items its executor was handed."""
    loop = asyncio.get_running_loop()
    executor = CountingExecutor()
    loop.set_default_executor(executor)

    async def call() -> str:
        return "".join([chunk async for chunk in provider.stream(PROMPT, TokenUsage())])

    try:
        texts = await asyncio.gather(*(call() for _ in range(BURST)))
    finally:
        executor.shutdown(wait=True)
    assert all(text.startswith("INT. STAND-IN STUDIO") for text in texts)
    return executor.submitted


@pytest.mark.parametrize("chain", ["openai", "anthropic", "local"])
async def test_a_burst_on_fresh_clients_takes_no_thread(standin: LlmStandin, chain: str) -> None:
    stages = _stages(standin, chain)
    try:
        assert await _burst(stages.write[0]) == 0
    finally:
        await stages.aclose()
    api = "anthropic" if chain == "anthropic" else "openai"
    sdk = anthropic._base_client if chain == "anthropic" else openai._base_client
    sent = {record.headers.get("x-stainless-os") for record in standin.of(api)}
    assert sent == {str(sdk.get_platform())}  # the header the SDK would have sent


async def test_without_the_lookup_at_start_up_the_burst_takes_threads(
    standin: LlmStandin,
) -> None:
    """What the start-up lookup saves: the SDK's own first requests each go to a thread."""
    stages = _stages(standin, "openai")
    try:
        client = stages.clients[0]
        assert client._platform is not None
        client._platform = None
        assert await _burst(stages.write[0]) >= 1
    finally:
        await stages.aclose()


def test_the_openai_embedders_client_is_primed_too() -> None:
    embedder = OpenAIEmbedder(api_key="test", model="text-embedding-3-small")
    assert embedder._client._platform == openai._base_client.get_platform()
