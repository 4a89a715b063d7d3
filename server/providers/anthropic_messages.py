"""Anthropic Messages streaming, through the official `anthropic` SDK.

A continuation uses Anthropic's assistant prefill: the partial text is the
last (assistant) message and the model writes what follows it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
from anthropic.types import (
    MessageParam,
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    TextDelta,
)

from server.providers.base import Prompt, TokenUsage
from server.providers.errors import ProviderFailure, classify


def _drop_prefix(text: str, skip: str) -> tuple[str, str]:
    """Drop from `text` the part of `skip` it starts with; (text left, skip left)."""
    same = 0
    while same < min(len(text), len(skip)) and text[same] == skip[same]:
        same += 1
    if same == len(text):
        return "", skip[same:]
    return text[same:], ""


def message_list(prompt: Prompt) -> list[MessageParam]:
    """The messages of `prompt`; a continuation prefills the assistant turn with the partial."""
    messages: list[MessageParam] = [{"role": "user", "content": prompt.user}]
    if prompt.partial:
        # The API refuses a prefill that ends in whitespace; the router trims any overlap.
        messages.append({"role": "assistant", "content": prompt.partial.rstrip()})
    return messages


class AnthropicMessagesProvider:
    """Streams `messages.create(stream=True)`: text deltas, usage from message_start/delta."""

    name = "anthropic"

    def __init__(
        self, client: anthropic.AsyncAnthropic, model: str, *, max_output_tokens: int = 8192
    ) -> None:
        self._client = client
        self._model = model
        self._max_output_tokens = max_output_tokens

    @property
    def model(self) -> str:
        return self._model

    async def stream(self, prompt: Prompt, usage: TokenUsage) -> AsyncIterator[str]:
        try:
            response = await self._client.messages.create(
                model=self._model,
                system=prompt.system,
                messages=message_list(prompt),
                max_tokens=self._max_output_tokens,
                stream=True,
            )
        except Exception as error:
            raise classify(self.name, error) from error
        # The prefill lost its trailing whitespace; the model usually writes it again.
        skip = prompt.partial[len(prompt.partial.rstrip()) :]
        async with response:
            try:
                async for event in response:
                    if isinstance(event, RawMessageStartEvent):
                        usage.input_tokens = event.message.usage.input_tokens
                        usage.output_tokens = event.message.usage.output_tokens
                        usage.reported = True
                    elif isinstance(event, RawMessageDeltaEvent):
                        usage.output_tokens = event.usage.output_tokens
                        if event.usage.input_tokens is not None:
                            usage.input_tokens = event.usage.input_tokens
                    elif isinstance(event, RawContentBlockDeltaEvent) and isinstance(
                        event.delta, TextDelta
                    ):
                        text, skip = _drop_prefix(event.delta.text, skip)
                        if text:
                            yield text
            except ProviderFailure:
                raise
            except Exception as error:
                raise classify(self.name, error) from error
