"""The load tool's OpenAI stand-in, read by the real `openai` SDK, and a spawned run through it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from scriptgen.cli import run
from scriptgen.loadtest import count_tokens
from scriptgen.loadtest._standin import OpenAIStandin, Pace, screenplay

from server import fountain


@pytest.fixture
async def standin_url() -> AsyncIterator[str]:
    standin = OpenAIStandin(Pace(first_token_seconds=0.0, tokens_per_second=0.0, tokens=80))
    await standin.start()
    try:
        yield standin.url
    finally:
        await standin.stop()


def test_the_screenplay_is_fountain_the_review_passes_and_tokens_are_the_load_tools() -> None:
    tokens = screenplay(150)
    script = "".join(tokens)
    assert len(tokens) >= 150
    assert count_tokens(script) == len(tokens)
    assert all(count_tokens(token) == 1 for token in tokens)
    assert fountain.review(script).passed


async def test_the_sdk_reads_one_token_per_chunk_then_the_finish_and_the_usage(
    standin_url: str,
) -> None:
    async with openai.AsyncOpenAI(api_key="k", base_url=standin_url, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-standin",
            messages=[{"role": "user", "content": "Write."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        texts: list[str] = []
        finish: list[str] = []
        usage = None
        async with stream:
            async for chunk in stream:
                assert chunk.model == "gpt-standin"
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        texts.append(choice.delta.content)
                    if choice.finish_reason:
                        finish.append(choice.finish_reason)
    assert texts == screenplay(80)
    assert finish == ["stop"]
    assert usage is not None and usage.completion_tokens == len(texts)


async def _reply_to(url: str, messages: list[ChatCompletionMessageParam]) -> tuple[list[str], int]:
    """The texts of the stand-in's reply to `messages`, and the completion tokens it counted."""
    async with openai.AsyncOpenAI(api_key="k", base_url=url, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-standin",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        texts: list[str] = []
        counted = -1
        async with stream:
            async for chunk in stream:
                counted = chunk.usage.completion_tokens if chunk.usage else counted
                texts += [c.delta.content for c in chunk.choices if c.delta.content]
    return texts, counted


@pytest.mark.parametrize(
    ("partial", "resumed_at"),
    [
        (lambda tokens: "".join(tokens[:25]), 25),  # cut between tokens: the next one on
        (lambda tokens: "".join(tokens[:25]) + tokens[25][:2], 25),  # inside one: it again
        (lambda tokens: "".join(tokens), -1),  # all of it: nothing left
        (lambda tokens: "Something else entirely.", 0),  # not its text: from the start
    ],
    ids=["between-tokens", "inside-a-token", "whole", "not-its-text"],
)
async def test_a_continuation_gets_the_rest_of_the_reply(
    standin_url: str, partial: Callable[[list[str]], str], resumed_at: int
) -> None:
    """As the core asks after a provider worker exited: the partial, then "go on"."""
    tokens = screenplay(80)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You write screenplays."},
        {"role": "user", "content": "Write."},
        {"role": "assistant", "content": partial(tokens)},
        {"role": "user", "content": "Continue exactly where you stopped."},
    ]
    texts, counted = await _reply_to(standin_url, messages)
    resumed_at = len(tokens) if resumed_at < 0 else resumed_at
    assert texts == tokens[resumed_at:]
    assert counted == len(tokens) - resumed_at


async def test_tokens_are_paced_from_the_first_token_on() -> None:
    standin = OpenAIStandin(Pace(first_token_seconds=0.2, tokens_per_second=50.0, tokens=10))
    url = await standin.start()
    try:
        async with openai.AsyncOpenAI(api_key="k", base_url=url, max_retries=0) as client:
            sent = time.monotonic()
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "Write."}], stream=True
            )
            arrivals = []
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        arrivals.append(time.monotonic() - sent)
    finally:
        await standin.stop()
    # Generous bounds: only the shape is checked, not timings on a shared machine.
    assert arrivals[0] >= 0.19
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) / 50.0 * 0.9


async def test_cli_runs_through_the_standin_and_the_openai_sdk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = await asyncio.wait_for(
        run(
            [
                "loadtest",
                "--spawn",
                "--provider=openai-standin",
                "--streams=3",
                "--ttft=0",
                "--tokens-per-second=0",
                "--reply-tokens=60",
                "--sample-interval=0.1",
                "--quiet",
                f"--json={tmp_path / 'run.json'}",
            ]
        ),
        timeout=90,
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "outcomes: completed 3" in out
    assert "(match)" in out
    document = json.loads((tmp_path / "run.json").read_text())
    assert document["run"]["provider"] == "openai-standin"
    assert document["run"]["reply_tokens"] == 60
    assert {p["role"] for p in document["processes"]} == {"core", "gateway", "standin"}
    assert document["latency_ms"]["write_stage_to_first_token"]["count"] == 3
    # Each completed stream waited for its review, save and indexing after its last delta.
    finishing = document["latency_ms"]["last_token_to_completed"]
    assert finishing["count"] == 3
    assert 0 < finishing["p50"] <= finishing["max"] < 90_000
    assert "last token → completed" in out
    # Each job's script is one stand-in reply: every token of it arrived as a delta.
    assert document["throughput"]["tokens_delivered"] == 3 * len(screenplay(60))
