"""A stand-in for OpenAI's streaming Chat Completions API, for load runs against the real SDK.

    python -m scriptgen.loadtest._standin --ttft 0.3 --tokens-per-second 30 --tokens 600

It prints `OpenAI stand-in http://127.0.0.1:PORT/v1` once it listens, then answers
`POST /v1/chat/completions` with `stream: true` the way OpenAI does: one
`chat.completion.chunk` per token (the fields OpenAI sends, `usage: null` in each
when usage was asked for), a last chunk with `finish_reason`, the usage chunk,
`data: [DONE]`. The text is a Fountain screenplay whose tokens are the load
tool's (`\\S+\\s*|\\s+`), so a run's token counts are the stand-in's chunks.
A continuation — the messages end with the assistant's partial reply and an instruction
to go on, as the core sends after a provider worker exited mid-call — gets the rest of
the reply after the whole tokens of that partial (from its start when the partial is not
the stand-in's text), as a model would go on.
Pacing is by absolute schedule per stream: the first token at `--ttft`, token k at
`ttft + k / rate`; tokens that fall due together go out in one write. Every
frame is encoded once. What is left per token is a timer, a loop step and a write
(a send to the kernel): 37-53 us of CPU per token on a slow two-CPU machine, as much
as the core spends in a real-provider run there (BENCHMARKS.md, session 29). A real
provider's work is not on the machine, so load runs count the stand-in's CPU apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from scriptgen._heap import freeze_startup_heap

_TOKEN = re.compile(r"\S+\s*|\s+")
_CAST = ("MAYA", "JONAH", "DETECTIVE REYES", "ELENA")
_PLACES = ("INT. DINER - NIGHT", "EXT. CITY STREET - DAWN", "INT. POLICE STATION - DAY")
_ACTION = "Rain streaks the window. {a} stands very still, listening to the street below."
_LINES = (
    "You said it was over.",
    "It was. Until tonight.",
    "Tell me what you saw. All of it.",
    "We don't have time for this.",
)


def screenplay(tokens: int) -> list[str]:
    """A Fountain screenplay of about `tokens` tokens (whole scenes), as its tokens."""
    parts: list[str] = []
    scene = 0
    while sum(len(_TOKEN.findall(part)) for part in parts) < tokens:
        place = _PLACES[scene % len(_PLACES)]
        a, b = _CAST[scene % len(_CAST)], _CAST[(scene + 1) % len(_CAST)]
        dialogue = "".join(
            f"{who}\n{_LINES[(scene + line) % len(_LINES)]}\n\n"
            for line, who in enumerate((a, b, a, b))
        )
        parts.append(f"{place}\n\n{_ACTION.format(a=a)}\n\n{dialogue}")
        scene += 1
    return _TOKEN.findall("".join(parts))


@dataclass(frozen=True, slots=True)
class Pace:
    """How every reply is paced and how long it is."""

    first_token_seconds: float = 0.3
    tokens_per_second: float = 30.0
    tokens: int = 600


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class _Frames:
    """Every frame of one reply, encoded once per (model, usage asked) pair."""

    def __init__(self, model: str, tokens: Sequence[str], include_usage: bool) -> None:
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            body: dict[str, Any] = {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_standin",
                "choices": choices,
            }
            if include_usage:
                body["usage"] = None
            body.update(extra)
            return body

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        self.start = _frame(
            chunk(choice({"role": "assistant", "content": "", "refusal": None}), obfuscation="x")
        )
        self.tokens = [
            _frame(chunk(choice({"content": token}), obfuscation="xyz")) for token in tokens
        ]

        def end(completion_tokens: int) -> bytes:
            frames = _frame(chunk(choice({}, "stop"), obfuscation="x"))
            if include_usage:
                usage = {
                    "prompt_tokens": 11,
                    "completion_tokens": completion_tokens,
                    "total_tokens": 11 + completion_tokens,
                }
                frames += _frame(chunk([], usage=usage, obfuscation="x"))
            return frames + b"data: [DONE]\n\n"

        self.end = end(len(tokens))
        #: The end of a continuation's reply, which sends fewer tokens (made when asked).
        self.end_after = end


class OpenAIStandin:
    """The stand-in server; `url` is its `/v1` base URL once started."""

    def __init__(self, pace: Pace) -> None:
        self._pace = pace
        self._tokens = screenplay(pace.tokens)
        self._frames: dict[tuple[str, bool], _Frames] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        bound = next(a for a in self._runner.addresses if isinstance(a, tuple))[1]
        self.url = f"http://127.0.0.1:{bound}/v1"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _frames_of(self, body: dict[str, Any]) -> _Frames:
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        key = (str(body.get("model", "stand-in")), usage)
        if key not in self._frames:
            self._frames[key] = _Frames(key[0], self._tokens, usage)
        return self._frames[key]

    def _resume_at(self, body: dict[str, Any]) -> int:
        """The token a reply starts at: 0, or for a continuation the first token its partial
        reply does not hold whole (a token cut inside comes again, as a model restarts it)."""
        messages = body.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            return 0
        partial = messages[-2]
        if not isinstance(partial, dict) or partial.get("role") != "assistant":
            return 0
        text = partial.get("content")
        if not isinstance(text, str):
            return 0
        offset = 0
        for index, token in enumerate(self._tokens):
            if not text.startswith(token, offset):
                # The partial must end inside this token, or it is not the stand-in's text.
                return index if token.startswith(text[offset:]) else 0
            offset += len(token)
        return len(self._tokens) if offset == len(text) else 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            error = {"error": {"message": "the stand-in only streams", "type": "invalid_request"}}
            return web.json_response(error, status=400)
        frames = self._frames_of(body)
        first = self._resume_at(body)
        pace = self._pace
        start = time.monotonic() + pace.first_token_seconds
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(frames.start)
            tokens = frames.tokens[first:] if first else frames.tokens
            sent = 0
            total = len(tokens)
            while sent < total:
                now = time.monotonic()
                if now < start:
                    due = 0
                elif pace.tokens_per_second > 0:
                    due = min(total, int((now - start) * pace.tokens_per_second) + 1)
                else:
                    due = total
                if due <= sent:
                    wait = start - now if sent == 0 else start + sent / pace.tokens_per_second - now
                    await asyncio.sleep(max(0.0, wait))
                    continue
                await response.write(b"".join(tokens[sent:due]))
                sent = due
            await response.write(frames.end_after(total) if first else frames.end)
            await response.write_eof()
        return response


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scriptgen.loadtest._standin", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="0: a free port (default)")
    parser.add_argument("--ttft", type=float, default=0.3, help="seconds to the first token")
    parser.add_argument("--tokens-per-second", type=float, default=30.0, help="0: unpaced")
    parser.add_argument("--tokens", type=int, default=600, help="tokens per reply (about)")
    return parser


async def _serve(pace: Pace, port: int) -> None:
    standin = OpenAIStandin(pace)
    url = await standin.start(port)
    # A stand-in process is the provider's side of a load run: its own full collections
    # (17-37 ms in a 200-stream burst) would count as the service's time to first token.
    freeze_startup_heap()
    print(f"OpenAI stand-in {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await standin.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT."""
    args = _parser().parse_args(argv)
    pace = Pace(float(args.ttft), float(args.tokens_per_second), int(args.tokens))
    if pace.first_token_seconds < 0 or pace.tokens_per_second < 0 or pace.tokens < 1:
        print("--ttft and --tokens-per-second must not be negative, --tokens ≥ 1", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(pace, int(args.port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
