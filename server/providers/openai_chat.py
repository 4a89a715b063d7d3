"""OpenAI Chat Completions streaming, through the official `openai` SDK.

The same class serves any OpenAI-compatible server (see `local.py`). The SDK's
own retries are off: the router retries, with its backoff and breakers.

The SDK sends the request and raises its status errors (with Retry-After);
the streamed body is read raw (`with_streaming_response`) and its chunks parsed
by `event_stream` into dicts: the SDK's `AsyncStream` builds a pydantic
`ChatCompletionChunk` per token, which cost more CPU than everything else on
the path together. What is read is what `AsyncStream` reads: every event's
JSON, an `error` object in it raises `openai.APIError`, and read timeouts and cut
connections raise the SDK's timeout and connection errors.

Stricter than `AsyncStream`, which takes whatever ends the body for the end of the
text: the choice's `finish_reason` says how the text ended (`length`, cut at the
output cap, is `TokenUsage.stop` STOP_OUTPUT_LIMIT, which the router continues;
`content_filter`, or a `delta.refusal`, is a `refused` failure), and a body that
ends with neither a finish reason nor `[DONE]` was cut: a `connection` failure,
continued elsewhere from the text already delivered. Once the finish reason (or `[DONE]`)
is in, the text is complete: the usage chunk and `[DONE]` that follow are read, and the
body drained so its connection can be reused, for a second at most
(`body_pacing.read_rest`), and a cut connection, a timeout or a silence meanwhile ends
the call as it stands, never as a failure that would have the router continue a
finished text.

The request goes through the client's generic `post` (the SDK's documented way
to any endpoint), answered by the raw streamed response: base URL, key, headers,
timeouts and status errors with Retry-After stay the SDK's. What it skips is
`completions.create`'s walk of the typed parameters (`maybe_transform`), which
changes nothing in a body of plain strings and numbers but was ~40 % of the
~4 ms of CPU each job's request cost: in a burst of job starts, time to first
token. The path goes as the absolute URL the SDK would make of it, made once per
base URL: the SDK joins a relative path to the base URL anew for every request
(httpx2's `URL.copy_with`, ~17 µs warm and ~8 % of a request's CPU in a burst),
while an absolute one it only parses, and httpx2 keeps parsed URLs in a small
cache (~0.5 µs; `scripts/sdk_request_costs.py`). The clients are plain
`AsyncOpenAI` (`factory.py`, `local.py`): `AsyncAzureOpenAI`, which puts the
deployment into the path only for the relative `/chat/completions` and a JSON
body, is not one of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import openai
import orjson
from openai.types.chat import ChatCompletionMessageParam

from server.providers.base import (
    CONTINUE_INSTRUCTION,
    STOP_END,
    STOP_OUTPUT_LIMIT,
    Prompt,
    TokenUsage,
)
from server.providers.body_pacing import read_rest
from server.providers.errors import REFUSED, ProviderFailure, classify
from server.providers.event_stream import Event, event_batches


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
        output_cap_field: str = "max_completion_tokens",
    ) -> None:
        self._client = client
        self._model = model
        self._name = name
        self._max_output_tokens = max_output_tokens
        self._include_usage = include_usage
        #: The request field the output cap goes in: OpenAI's own, or `max_tokens`, which
        #: OpenAI deprecated but OpenAI-compatible servers read (`local.py`).
        self._output_cap_field = output_cap_field
        self._base_url: httpx2.URL | None = None
        self._url = ""

    def chat_url(self) -> str:
        """`/chat/completions` joined to the client's base URL as the SDK joins a relative
        path (its `_prepare_url`); made again only if the base URL was changed."""
        base = self._client.base_url
        if base is not self._base_url:
            self._url = str(base.copy_with(raw_path=base.raw_path + b"chat/completions"))
            self._base_url = base
        return self._url

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    def _body(self, prompt: Prompt) -> dict[str, Any]:
        """The Chat Completions request (`completions.create`'s fields, as JSON)."""
        body: dict[str, Any] = {
            "model": self._model,
            "messages": chat_messages(prompt),
            self._output_cap_field: self._max_output_tokens,
            "stream": True,
        }
        if self._include_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    async def stream(self, prompt: Prompt, usage: TokenUsage) -> AsyncIterator[str]:
        # The exit stack closes the HTTP response however the iteration ends, cancellation too.
        async with AsyncExitStack() as stack:
            try:
                response = await self._client.post(
                    self.chat_url(),
                    cast_to=httpx2.Response,
                    # The JSON as bytes, sent as they are (the SDK's Content-Type stays
                    # JSON): orjson takes ~0.4 µs where the SDK's encoder takes ~14 µs.
                    content=orjson.dumps(self._body(prompt)),
                    stream=True,
                )
            except Exception as error:
                raise classify(self._name, error) from error
            stack.push_async_callback(response.aclose)
            try:
                async for text in _texts(self._name, response, usage):
                    yield text
            except ProviderFailure:
                raise
            except Exception as error:
                raise classify(self._name, error) from error


async def _texts(name: str, response: httpx2.Response, usage: TokenUsage) -> AsyncIterator[str]:
    """The text of a Chat Completions stream, one piece per read of the body (the chunks
    that read brought, joined); `usage` from its usage chunk and finish reason."""
    body = response.aiter_bytes()
    batches = event_batches(body)
    done = False
    try:
        async for batch in batches:
            text, failure, done = _read_batch(name, response, batch, usage)
            if text:
                yield text  # what came before a failure in the same read is delivered first
            if failure is not None:
                raise failure
            if done or usage.stop:
                break
        else:
            # Neither a finish reason nor [DONE]: the body was cut between two chunks.
            raise openai.APIConnectionError(
                message="the stream ended without a finish reason or [DONE]",
                request=response.request,
            )
    except httpx2.TimeoutException as error:
        raise openai.APITimeoutError(request=response.request) from error
    except (httpx2.RequestError, anyio.EndOfStream) as error:
        raise openai.APIConnectionError(request=response.request) from error
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"an unexpected chunk shape: {error!r}") from error
    # The text is complete. After its finish reason come the usage chunk and [DONE], read
    # within the rest-of-body bound: a cut or a silence there ends the call as it stands.
    await read_rest(body, None if done else batches, lambda batch: _after_stop(batch, usage))


def _after_stop(batch: list[Event], usage: TokenUsage) -> bool:
    """Book the usage chunk of one read after the finish reason; whether [DONE] came."""
    for event in batch:
        if event.data.startswith("[DONE]"):
            return True
        chunk = event.json()
        reported = chunk.get("usage") if isinstance(chunk, Mapping) else None
        if reported:
            usage.input_tokens = int(reported["prompt_tokens"])
            usage.output_tokens = int(reported["completion_tokens"])
            usage.reported = True
    return False


def _read_batch(
    name: str, response: httpx2.Response, batch: list[Event], usage: TokenUsage
) -> tuple[str, Exception | None, bool]:
    """The text of one read's chunks, what went wrong in them (after that text), and whether
    `[DONE]` came."""
    texts: list[str] = []
    try:
        for event in batch:
            if event.data.startswith("[DONE]"):
                return "".join(texts), None, True
            chunk = event.json()
            if not isinstance(chunk, Mapping):
                continue
            if chunk.get("error"):
                return "".join(texts), _stream_error(response, chunk["error"]), False
            reported = chunk.get("usage")
            if reported:
                usage.input_tokens = int(reported["prompt_tokens"])
                usage.output_tokens = int(reported["completion_tokens"])
                usage.reported = True
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta")
                if delta:
                    text = delta.get("content")
                    if text:
                        texts.append(text)
                    if delta.get("refusal"):
                        refusal = f"the model refused: {str(delta['refusal'])[:200]}"
                        return "".join(texts), ProviderFailure(name, REFUSED, refusal), False
                finish = choice.get("finish_reason")
                if finish:
                    if finish == "content_filter":
                        filtered = "the provider's content filter cut the text"
                        return "".join(texts), ProviderFailure(name, REFUSED, filtered), False
                    usage.stop = STOP_OUTPUT_LIMIT if finish == "length" else STOP_END
    except Exception as error:  # raised by the caller once the text before it is delivered
        return "".join(texts), error, False
    return "".join(texts), None, False


def _stream_error(response: httpx2.Response, error: Any) -> openai.APIError:
    message = error.get("message") if isinstance(error, Mapping) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=response.request, body=error)
