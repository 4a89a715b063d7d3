"""A stand-in for the OpenAI chat-completions and Anthropic messages streaming APIs, with faults.

It speaks the exact SSE wire format each official SDK parses, so the real
`openai.AsyncOpenAI(base_url=f"{url}/v1")` and `anthropic.AsyncAnthropic(base_url=url)`
talk to it over real HTTP. Each API has a queue of `Reply` scripts (the last
one repeats): text, pace, how the text ends (finish / stop reason, a refusal, the
end marker or none, a connection left open or cut after it), and a fault — an HTTP
error with Retry-After (and a body of the test's), a hang before the first token, a
connection cut mid-stream, a body that ends early but cleanly, an error event
mid-stream, or a malformed chunk.
Every request is recorded, including whether the client closed it early.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
from aiohttp import web

from server.providers.http_transport import AiohttpTransport

#: The text of a reply: fixed, or computed from the request body.
ReplyText = str | Callable[[dict[str, Any]], str]

#: What Anthropic answers a prefill with on Claude 4.6 and later models.
PREFILL_REFUSAL = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "This model does not support assistant message prefill. The conversation"
        " must end with a user message.",
    },
}


@dataclass
class Reply:
    """How the stand-in answers one request."""

    text: ReplyText = "INT. STAND-IN STUDIO - DAY\n\nA light hums.\n"
    #: An HTTP error status instead of a stream (e.g. 429, 500, 401, 400).
    status: int = 200
    retry_after: str | None = None
    #: The JSON body of that error (None: the stand-in's own, a `server_error` / `api_error`).
    error_body: dict[str, Any] | None = None
    #: Seconds to wait before the first token (large: a hang).
    hang_seconds: float = 0.0
    #: Abort the connection after this many characters of text.
    cut_after: int | None = None
    #: Send an unparseable chunk after this many characters of text.
    malformed_after: int | None = None
    chunk_chars: int = 6
    chunk_delay: float = 0.0
    input_tokens: int = 11
    output_tokens: int | None = None  # None: one per chunk sent
    #: The finish reason (OpenAI) or stop reason (Anthropic) after the text: "" the API's
    #: usual one (`stop`, `end_turn`), None none at all.
    finish: str | None = ""
    #: OpenAI: a `delta.refusal` with this text, sent after the text.
    refusal: str | None = None
    #: Whether the end marker (`data: [DONE]`, `message_stop`) ends the stream.
    end_marker: bool = True
    #: Seconds the body stays open after the end marker before it ends.
    linger_seconds: float = 0.0
    #: Cut the connection after the end (after `linger_seconds`) instead of ending the body.
    cut_at_end: bool = False
    #: End the body cleanly (no finish reason, no end marker) after this many characters.
    end_after: int | None = None
    #: Send an error event of `error_type` after this many characters of text, then end.
    error_after: int | None = None
    error_type: str = "overloaded_error"


@dataclass
class Recorded:
    """One request the stand-in received."""

    api: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    #: The request's path and query, as the server saw them.
    target: str = ""
    sent: str = ""
    finished: bool = False
    client_closed: bool = False
    #: Set once the first text chunk was sent.
    began: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def partial(self) -> str:
        """The assistant text the request asks to continue, if any."""
        messages = self.body.get("messages", [])
        for message in reversed(messages):
            if message.get("role") == "assistant":
                return str(message.get("content", ""))
        return ""


class LlmStandin:
    """The server; `openai` and `anthropic` are the reply queues of each API."""

    def __init__(self) -> None:
        self.openai: list[Reply] = [Reply()]
        self.anthropic: list[Reply] = [Reply()]
        self.requests: list[Recorded] = []
        #: Anthropic answers a request ending in an assistant turn (a prefill) with the 400
        #: of Claude 4.6 and later models, without taking a reply from the queue.
        self.refuses_prefill = False
        #: Set when a request arrives.
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = next(a for a in self._runner.addresses if isinstance(a, tuple))[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def of(self, api: str) -> list[Recorded]:
        """Requests to `api` ("openai" or "anthropic"), in order."""
        return [r for r in self.requests if r.api == api]

    @staticmethod
    def _next(queue: list[Reply]) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "openai", self.openai)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "anthropic", self.anthropic)

    async def _serve(
        self, request: web.Request, api: str, queue: list[Reply]
    ) -> web.StreamResponse:
        body = await request.json()
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = Recorded(api, body, headers, request.raw_path)
        self.requests.append(record)
        self.arrived.set()
        try:
            messages = body.get("messages") or [{}]
            if api == "anthropic" and self.refuses_prefill and messages[-1].get("role") != "user":
                return web.json_response(PREFILL_REFUSAL, status=400)
            return await self._answer(request, api, self._next(queue), record)
        finally:
            record.ended.set()

    async def _answer(
        self, request: web.Request, api: str, reply: Reply, record: Recorded
    ) -> web.StreamResponse:
        if reply.status != 200:
            headers = {"retry-after": reply.retry_after} if reply.retry_after else {}
            error = reply.error_body or (
                {"error": {"message": "stand-in fault", "type": "server_error", "code": None}}
                if api == "openai"
                else {"type": "error", "error": {"type": "api_error", "message": "stand-in"}}
            )
            return web.json_response(error, status=reply.status, headers=headers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if not await self._wait(request, reply.hang_seconds, record):
            return response
        text = reply.text(body_of(record)) if callable(reply.text) else reply.text
        frames = _OpenAIFrames(record) if api == "openai" else _AnthropicFrames(record)
        chunks = [text[i : i + reply.chunk_chars] for i in range(0, len(text), reply.chunk_chars)]
        try:
            await response.write(frames.start(reply))
            for chunk in chunks:
                if reply.cut_after is not None and len(record.sent) >= reply.cut_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if reply.malformed_after is not None and len(record.sent) >= reply.malformed_after:
                    await response.write(frames.malformed())
                    return response
                if reply.end_after is not None and len(record.sent) >= reply.end_after:
                    await response.write_eof()
                    return response
                if reply.error_after is not None and len(record.sent) >= reply.error_after:
                    await response.write(frames.error(reply.error_type))
                    await response.write_eof()
                    return response
                await response.write(frames.delta(chunk))
                record.sent += chunk
                record.began.set()
                if reply.chunk_delay and not await self._wait(request, reply.chunk_delay, record):
                    return response
            sent_tokens = reply.output_tokens if reply.output_tokens is not None else len(chunks)
            await response.write(frames.end(reply, sent_tokens))
            if reply.linger_seconds and not await self._wait(request, reply.linger_seconds, record):
                return response
            if reply.cut_at_end:
                assert request.transport is not None
                request.transport.abort()
                return response
            await response.write_eof()
            record.finished = True
        except (ConnectionResetError, ConnectionError):
            record.client_closed = True
        return response

    @staticmethod
    async def _wait(request: web.Request, seconds: float, record: Recorded) -> bool:
        """Sleep, watching the connection; False when the client closed it meanwhile."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            transport = request.transport
            if transport is None or transport.is_closing():
                record.client_closed = True
                return False
            await asyncio.sleep(min(0.01, max(0.0, until - time.monotonic())))
        return True


def body_of(record: Recorded) -> dict[str, Any]:
    """The recorded request body (for reply functions)."""
    return record.body


def _sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


class _OpenAIFrames:
    """chat.completion.chunk frames, `data: [DONE]` at the end, usage when asked for."""

    def __init__(self, record: Recorded) -> None:
        self._body = record.body
        self._model = str(record.body.get("model", "stand-in"))

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self._model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def start(self, reply: Reply) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, text: str) -> bytes:
        return self._chunk({"content": text})

    def malformed(self) -> bytes:
        return b'data: {"id": "chatcmpl-standin", "choices": [\n\n'

    def error(self, error_type: str) -> bytes:
        return _sse({"error": {"message": "stand-in fault", "type": error_type, "code": None}})

    def end(self, reply: Reply, output_tokens: int) -> bytes:
        frames = b""
        if reply.refusal is not None:
            frames += self._chunk({"refusal": reply.refusal})
        if reply.finish is not None:
            frames += self._chunk({}, reply.finish or "stop")
        if (self._body.get("stream_options") or {}).get("include_usage"):
            frames += _sse(
                {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": self._model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": reply.input_tokens,
                        "completion_tokens": output_tokens,
                        "total_tokens": reply.input_tokens + output_tokens,
                    },
                }
            )
        return frames + (b"data: [DONE]\n\n" if reply.end_marker else b"")


class _AnthropicFrames:
    """message_start, content_block_start/delta/stop, message_delta (usage), message_stop."""

    def __init__(self, record: Recorded) -> None:
        self._model = str(record.body.get("model", "stand-in"))

    def start(self, reply: Reply) -> bytes:
        message: dict[str, Any] = {
            "id": "msg_standin",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
        }
        return (
            _sse({"type": "message_start", "message": message}, "message_start")
            + _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
            + _sse({"type": "ping"}, "ping")
        )

    def delta(self, text: str) -> bytes:
        return _sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
            "content_block_delta",
        )

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n'

    def error(self, error_type: str) -> bytes:
        return _sse(
            {"type": "error", "error": {"type": error_type, "message": "stand-in fault"}}, "error"
        )

    def end(self, reply: Reply, output_tokens: int) -> bytes:
        frames = _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        if reply.finish is not None:
            frames += _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reply.finish or "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
                "message_delta",
            )
        if reply.end_marker:
            frames += _sse({"type": "message_stop"}, "message_stop")
        return frames


@asynccontextmanager
async def running_standin() -> AsyncIterator[LlmStandin]:
    """An LLM stand-in on a free port, stopped afterwards (stopping twice is harmless)."""
    server = LlmStandin()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def core_openai_client(standin: LlmStandin) -> openai.AsyncOpenAI:
    """An `openai` client on the stand-in as the core builds one: the SDK's aiohttp client
    over the core's transport (`server.providers.http_transport`), no SDK retries."""
    return openai.AsyncOpenAI(
        base_url=f"{standin.url}/v1",
        api_key="test",
        max_retries=0,
        http_client=openai.DefaultAioHttpClient(transport=AiohttpTransport()),
    )


def core_anthropic_client(standin: LlmStandin) -> anthropic.AsyncAnthropic:
    """An `anthropic` client on the stand-in as the core builds one."""
    return anthropic.AsyncAnthropic(
        base_url=standin.url,
        api_key="test",
        max_retries=0,
        http_client=anthropic.DefaultAioHttpClient(transport=AiohttpTransport()),
    )
