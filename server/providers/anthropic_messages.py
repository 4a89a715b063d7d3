"""Anthropic Messages streaming, through the official `anthropic` SDK.

A continuation uses Anthropic's assistant prefill: the partial text is the
last (assistant) message and the model writes what follows it. Claude 4.6 and
later models refuse a prefill with a 400 (`invalid_request_error`, "does not
support assistant message prefill"; Anthropic's migration guide): on that
answer the call is sent again at once as the OpenAI path sends it, the partial
as an assistant turn followed by a user turn asking to go on, and the provider
sends every later continuation of that model so.

As for OpenAI (`openai_chat.py`), the SDK sends the request and raises its
status errors, and the streamed body is read raw and parsed by `event_stream`
instead of into a pydantic event per token. What is read is what the SDK's
`AsyncStream` reads: named events only, `ping` skipped, an `error` event
raised as `anthropic.APIStatusError` (classified by its `error.type`:
`errors.classify`), read timeouts and cut connections as the SDK's timeout and
connection errors. And what it does not: `message_delta`'s `stop_reason` says
how the text ended (`max_tokens` is `TokenUsage.stop` STOP_OUTPUT_LIMIT, which
the router continues; `refusal` is a `refused` failure), and a body that ends
with neither a stop reason nor `message_stop` was cut: a `connection` failure. Once the
stop reason is in, the text is complete: the rest of the body is read for a second at
most (`body_pacing.read_rest`), and a cut, a timeout or a silence there ends the call as
it stands.

A continuation sent as a prefill says so (`TokenUsage.exact_continuation`): the model
writes on from the partial's last character, so the router trims no overlap off it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack

import anthropic
import anyio
import httpx2
import orjson
from anthropic.types import MessageParam

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


def _drop_prefix(text: str, skip: str) -> tuple[str, str]:
    """Drop from `text` the part of `skip` it starts with; (text left, skip left)."""
    same = 0
    while same < min(len(text), len(skip)) and text[same] == skip[same]:
        same += 1
    if same == len(text):
        return "", skip[same:]
    return text[same:], ""


def message_list(prompt: Prompt, *, prefill: bool = True) -> list[MessageParam]:
    """The messages of `prompt`; a continuation prefills the assistant turn with the partial,
    or (`prefill` False) follows it with a user turn asking to go on."""
    messages: list[MessageParam] = [{"role": "user", "content": prompt.user}]
    if prompt.partial and prefill:
        # The API refuses a prefill that ends in whitespace; the provider drops it from the
        # text when the model writes it again (`_drop_prefix`).
        messages.append({"role": "assistant", "content": prompt.partial.rstrip()})
    elif prompt.partial:
        messages.append({"role": "assistant", "content": prompt.partial})
        messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    return messages


#: The message of Anthropic's answer to a prefill on Claude 4.6 and later: "This model does
#: not support assistant message prefill. The conversation must end with a user message."
_PREFILL_UNSUPPORTED = re.compile(
    r"(?:does not|doesn't|not) support[^.]*\bprefill|prefill[^.]*\bnot supported"
    r"|conversation must end with a user message"
)


def refuses_prefill(error: Exception) -> bool:
    """Whether `error` is the 400 of a model that takes no assistant prefill: an
    `invalid_request_error` saying the model does not support a prefill (or that the
    conversation must end with a user message). Any other 400 of a prefilled call, even
    one that names the prefill (its trailing whitespace, its length), is that call's own
    failure and leaves prefills on."""
    if not isinstance(error, anthropic.BadRequestError):
        return False
    body = error.body
    detail = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(detail, dict) or detail.get("type") != "invalid_request_error":
        return False
    message = str(detail.get("message", "")).lower()
    return bool(_PREFILL_UNSUPPORTED.search(message))


class AnthropicMessagesProvider:
    """Streams `messages.create(stream=True)`: text deltas, usage from message_start/delta."""

    name = "anthropic"

    def __init__(
        self, client: anthropic.AsyncAnthropic, model: str, *, max_output_tokens: int = 8192
    ) -> None:
        self._client = client
        self._model = model
        self._max_output_tokens = max_output_tokens
        #: Whether the model takes a prefill; False once it answered one with its 400.
        self.prefills = True

    @property
    def model(self) -> str:
        return self._model

    async def _post(self, prompt: Prompt, *, prefill: bool) -> httpx2.Response:
        # The SDK's generic post, as in openai_chat.py: create's walk of the typed
        # parameters changes nothing in this body and costs most of the call's CPU.
        return await self._client.post(
            "/v1/messages",
            cast_to=httpx2.Response,
            content=orjson.dumps(  # JSON bytes, as in openai_chat.py
                {
                    "model": self._model,
                    "system": prompt.system,
                    "messages": message_list(prompt, prefill=prefill),
                    "max_tokens": self._max_output_tokens,
                    "stream": True,
                }
            ),
            stream=True,
        )

    async def stream(self, prompt: Prompt, usage: TokenUsage) -> AsyncIterator[str]:
        prefill = self.prefills and bool(prompt.partial)
        # The exit stack closes the HTTP response however the iteration ends, cancellation too.
        async with AsyncExitStack() as stack:
            try:
                try:
                    response = await self._post(prompt, prefill=prefill)
                except Exception as error:
                    if not (prefill and refuses_prefill(error)):
                        raise
                    self.prefills = prefill = False  # for every later continuation too
                    response = await self._post(prompt, prefill=False)
            except Exception as error:
                raise classify(self.name, error) from error
            # A prefill lost its trailing whitespace; the model usually writes it again.
            skip = prompt.partial[len(prompt.partial.rstrip()) :] if prefill else ""
            usage.exact_continuation = prefill
            stack.push_async_callback(response.aclose)
            try:
                async for text in _texts(self.name, response, usage):
                    text, skip = _drop_prefix(text, skip)
                    if text:
                        yield text
            except ProviderFailure:
                raise
            except Exception as error:
                raise classify(self.name, error) from error


async def _texts(name: str, response: httpx2.Response, usage: TokenUsage) -> AsyncIterator[str]:
    """The text deltas of a Messages stream, one piece per read of the body (the deltas that
    read brought, joined); `usage` from message_start and message_delta, and its stop."""
    body = response.aiter_bytes()
    batches = event_batches(body)
    stopped = False
    try:
        async for batch in batches:
            text, failure, stopped = _read_batch(name, response, batch, usage)
            if text:
                yield text  # what came before a failure in the same read is delivered first
            if failure is not None:
                raise failure
            if stopped or usage.stop:
                break
        else:
            # Neither a stop reason nor message_stop: the body was cut between two events.
            raise anthropic.APIConnectionError(
                message="the stream ended without a stop reason or message_stop",
                request=response.request,
            )
    except httpx2.TimeoutException as error:
        raise anthropic.APITimeoutError(request=response.request) from error
    except (httpx2.RequestError, anyio.EndOfStream) as error:
        raise anthropic.APIConnectionError(request=response.request) from error
    # The text is complete (message_delta carried its usage with the stop reason): what
    # follows is read within the rest-of-body bound, and a cut or a silence there ends the
    # call as it stands.
    await read_rest(body, None if stopped else batches, _has_message_stop)


def _has_message_stop(batch: list[Event]) -> bool:
    """Whether the end marker came in one read after the stop reason."""
    return any(event.name == "message_stop" for event in batch)


def _read_batch(
    name: str, response: httpx2.Response, batch: list[Event], usage: TokenUsage
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
                # Classified by the body's error.type (`errors.classify`), not by the 200.
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
                stop = (payload.get("delta") or {}).get("stop_reason")
                if stop:
                    refused = _stop_failure(name, stop)
                    if refused is not None:
                        return "".join(texts), refused, False
                    usage.stop = STOP_OUTPUT_LIMIT if stop == "max_tokens" else STOP_END
    except (KeyError, TypeError, AttributeError) as error:
        failure = ValueError(f"an unexpected event shape: {error!r}")
        failure.__cause__ = error
        return "".join(texts), failure, False
    except Exception as error:  # raised by the caller once the text before it is delivered
        return "".join(texts), error, False
    return "".join(texts), None, False


def _stop_failure(name: str, stop: str) -> ProviderFailure | None:
    """The failure a stop reason is, if it is one."""
    if stop == "refusal":
        return ProviderFailure(name, REFUSED, "the model refused to go on (stop_reason refusal)")
    if stop == "model_context_window_exceeded":
        # The prompt and the text filled the model's context: the same request cannot go on.
        return ProviderFailure(name, "bad_request", "the model's context window is full")
    return None
