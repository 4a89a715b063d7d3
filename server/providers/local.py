"""The local provider: any OpenAI-compatible server (Ollama, vLLM, llama.cpp) at a base URL.

It speaks the OpenAI Chat Completions protocol through the official SDK, so
it is the OpenAI provider under another name, pointed at another base URL.
"""

from __future__ import annotations

import httpx2
import openai

from server.config import ProviderConfig
from server.providers.http_transport import sdk_transport
from server.providers.openai_chat import OpenAIChatProvider


def local_client(config: ProviderConfig, *, timeout: httpx2.Timeout) -> openai.AsyncOpenAI:
    """An SDK client for the server at `config.base_url`; most local servers ignore the key."""
    return openai.AsyncOpenAI(
        api_key=config.api_key or "local",
        base_url=config.base_url,
        max_retries=0,
        timeout=timeout,
        http_client=openai.DefaultAioHttpClient(transport=sdk_transport()),
    )


def local_provider(
    client: openai.AsyncOpenAI, model: str, *, max_output_tokens: int, include_usage: bool = True
) -> OpenAIChatProvider:
    """A provider named `local`; usage comes from the final chunk where the server sends it.

    The output cap goes as `max_tokens`: Ollama's OpenAI-compatible API reads that field
    and not `max_completion_tokens` (its documented request fields), llama.cpp's server
    and older vLLM the same, and every one of them reads `max_tokens`. Sent the other
    field, they apply their own default cap whatever the core's `max_output_tokens`.
    """
    return OpenAIChatProvider(
        client,
        model,
        name="local",
        max_output_tokens=max_output_tokens,
        output_cap_field="max_tokens",
        include_usage=include_usage,
    )
