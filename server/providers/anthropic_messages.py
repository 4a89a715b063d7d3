"""Anthropic Messages streaming, through the official `anthropic` SDK.

A continuation uses Anthropic's assistant prefill: the partial text is the
last (assistant) message and the model writes what follows it.

As for OpenAI (`openai_chat.py`), the SDK sends the request and raises its
status errors, and the streamed body is read raw and parsed by `event_stream`
instead of into a pydantic event per token. What is read is what the SDK's
`AsyncStream` reads: named events only, `ping` skipped, an `error` event
raised as `anthropic.APIStatusError` with the response's status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack

import anthropic
import httpx2
import orjson
from anthropic.types import MessageParam

from server.providers.base import Prompt, TokenUsage
from server.providers.body_pacing import unpaced
from server.providers.errors import ProviderFailure, classify
from server.providers.event_stream import Event, event_batches


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
        # The prefill lost its trailing whitespace; the model usually writes it again.
        skip = prompt.partial[len(prompt.partial.rstrip()) :]
        # The exit stack closes the HTTP response however the iteration ends, cancellation too.
        async with AsyncExitStack() as stack:
            try:
                # The SDK's generic post, as in openai_chat.py: create's walk of the typed
                # parameters changes nothing in this body and costs most of the call's CPU.
                response = await self._client.post(
                    "/v1/messages",
                    cast_to=httpx2.Response,
                    content=orjson.dumps(  # JSON bytes, as in openai_chat.py
                        {
                            "model": self._model,
                            "system": prompt.system,
                            "messages": message_list(prompt),
                            "max_tokens": self._max_output_tokens,
                            "stream": True,
                        }
                    ),
                    stream=True,
                )
            except Exception as error:
                raise classify(self.name, error) from error
            stack.push_async_callback(response.aclose)
            try:
                async for text in _texts(response, usage):
                    text, skip = _drop_prefix(text, skip)
                    if text:
                        yield text
            except ProviderFailure:
                raise
            except Exception as error:
                raise classify(self.name, error) from error


async def _texts(response: httpx2.Response, usage: TokenUsage) -> AsyncIterator[str]:
    """The text deltas of a Messages stream, one piece per read of the body (the deltas that
    read brought, joined); `usage` from message_start and message_delta."""
    batches = event_batches(response.aiter_bytes())
    async for batch in batches:
        text, failure, stopped = _read_batch(response, batch, usage)
        if text:
            yield text  # what came before a failure in the same read is delivered first
        if failure is not None:
            raise failure
        if stopped:
            with unpaced():  # the end of the body need not wait for a cut
                async for _ in batches:
                    pass
            return


def _read_batch(
    response: httpx2.Response, batch: list[Event], usage: TokenUsage
) -> tuple[str, Exception | None, bool]:
    """The text of one read's events, what went wrong in them (after that text), and
    whether `message_stop` came."""
    texts: list[str] = []
    try:
        for event in batch:
            if event.name is None or event.name == "ping":
                continue
            if event.name == "message_stop":
                return "".join(texts), None, True
            if event.name == "error":
                try:
                    body = event.json()
                    message = f"{body}"
                except ValueError:
                    body, message = event.data, event.data or f"Error code: {response.status_code}"
                raise anthropic.APIStatusError(message, response=response, body=body)
            if not event.data:
                continue
            payload = event.json()
            kind = payload.get("type") if isinstance(payload, Mapping) else None
            if kind == "content_block_delta":
                delta = payload["delta"]
                if delta.get("type") == "text_delta":
                    texts.append(delta["text"])
            elif kind == "message_start":
                reported = payload["message"]["usage"]
                usage.input_tokens = int(reported["input_tokens"])
                usage.output_tokens = int(reported["output_tokens"])
                usage.reported = True
            elif kind == "message_delta":
                reported = payload["usage"]
                usage.output_tokens = int(reported["output_tokens"])
                if reported.get("input_tokens") is not None:
                    usage.input_tokens = int(reported["input_tokens"])
    except (KeyError, TypeError, AttributeError) as error:
        failure: Exception = ValueError(f"an unexpected event shape: {error!r}")
        failure.__cause__ = error
        return "".join(texts), failure, False
    except Exception as error:  # raised by the caller once the text before it is delivered
        return "".join(texts), error, False
    return "".join(texts), None, False
