"""OpenAI Chat Completions streaming, through the official `openai` SDK.

The same class serves any OpenAI-compatible server (see `local.py`). The SDK's
own retries are off: the router retries, with its backoff and breakers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
from openai.types.chat import ChatCompletionMessageParam

from server.providers.base import CONTINUE_INSTRUCTION, Prompt, TokenUsage
from server.providers.errors import ProviderFailure, classify


def chat_messages(prompt: Prompt) -> list[ChatCompletionMessageParam]:
    """The chat messages of `prompt`; a continuation adds the partial text and asks to go on."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": prompt.user},
    ]
    if prompt.partial:
        messages.append({"role": "assistant", "content": prompt.partial})
        messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    return messages


class OpenAIChatProvider:
    """Streams `chat.completions.create(stream=True)` with usage in the final chunk."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        name: str = "openai",
        max_output_tokens: int = 8192,
        include_usage: bool = True,
    ) -> None:
        self._client = client
        self._model = model
        self._name = name
        self._max_output_tokens = max_output_tokens
        self._include_usage = include_usage

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    async def stream(self, prompt: Prompt, usage: TokenUsage) -> AsyncIterator[str]:
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=chat_messages(prompt),
                max_completion_tokens=self._max_output_tokens,
                stream=True,
                stream_options={"include_usage": True} if self._include_usage else openai.omit,
            )
        except Exception as error:
            raise classify(self._name, error) from error
        # `async with` closes the HTTP response however the iteration ends, cancellation too.
        async with response:
            try:
                async for chunk in response:
                    if chunk.usage is not None:
                        usage.input_tokens = chunk.usage.prompt_tokens
                        usage.output_tokens = chunk.usage.completion_tokens
                        usage.reported = True
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield choice.delta.content
            except ProviderFailure:
                raise
            except Exception as error:
                raise classify(self._name, error) from error
