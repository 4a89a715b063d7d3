"""The synthetic writer paces by deadline: fewer wake-ups, the same text, the same end time."""

from __future__ import annotations

import asyncio
import itertools
import time

from scriptgen.v1 import generation_pb2, project_pb2

from server import SyntheticConfig
from server.providers.base import Brief, Prompt, TokenUsage
from server.providers.synthetic import (
    UNPACED_CHUNK_TOKENS,
    UNPACED_TURN_TOKENS,
    SyntheticProvider,
    tokens,
    write_screenplay,
)
from tests.sharing import MACHINE

pytestmark = MACHINE

BRIEF = Brief(
    project=project_pb2.Project(name="projects/pace", title="Pace"),
    title="Deadlines",
    description="",
    episode_number=1,
)


def _prompt(partial: str = "") -> Prompt:
    return Prompt(generation_pb2.STAGE_WRITE, "system", "user", BRIEF, partial=partial)


async def _chunks(config: SyntheticConfig, partial: str = "") -> tuple[list[str], float]:
    started = time.monotonic()
    found = [c async for c in SyntheticProvider(config).stream(_prompt(partial), TokenUsage())]
    return found, time.monotonic() - started


async def test_one_wake_up_per_window_carries_every_token_due_and_ends_on_time() -> None:
    rate = 200.0
    config = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=rate, min_wake_seconds=0.1)
    chunks, elapsed = await _chunks(config)
    script = write_screenplay(BRIEF)
    count = len(tokens(script))
    assert "".join(chunks) == script
    assert chunks[0] == tokens(script)[0]  # the first token goes out alone, at once
    # About one chunk per 100 ms rather than one per token.
    assert len(chunks) <= count / rate / 0.1 + 3
    # The last token is due (count - 1) / rate after the first, window or not.
    assert (count - 1) / rate - 0.01 <= elapsed < (count - 1) / rate + 0.08


async def test_without_a_wake_window_every_token_is_its_own_chunk() -> None:
    config = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=2000.0)
    chunks, _ = await _chunks(config)
    assert chunks == tokens(write_screenplay(BRIEF))


async def test_unpaced_writing_sends_one_token_then_large_chunks() -> None:
    config = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0, episode_minutes=10)
    chunks, _ = await _chunks(config)
    script = write_screenplay(BRIEF, 10)
    pieces = tokens(script)
    assert "".join(chunks) == script
    assert chunks[0] == pieces[0]
    assert len(chunks) == 1 + -(-(len(pieces) - 1) // UNPACED_CHUNK_TOKENS)


async def test_unpaced_writing_can_stream_token_by_token_like_a_model() -> None:
    config = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0, unpaced_chunk_tokens=1)
    chunks, _ = await _chunks(config)
    assert chunks == tokens(write_screenplay(BRIEF))


async def _chunks_per_turn(config: SyntheticConfig) -> list[int]:
    """Two unpaced streams written at once: how many chunks each handed over in a row
    before the other ran, with the texts checked whole."""
    order: list[str] = []

    async def write(name: str) -> str:
        text = []
        async for chunk in SyntheticProvider(config).stream(_prompt(), TokenUsage()):
            order.append(name)
            text.append(chunk)
        return "".join(text)

    texts = await asyncio.gather(write("a"), write("b"))
    assert list(texts) == [write_screenplay(BRIEF, config.episode_minutes)] * 2
    return [len(list(run)) for _, run in itertools.groupby(order)]


async def test_unpaced_streams_hand_over_a_turns_worth_of_chunks_then_let_the_others_run() -> None:
    # One token per chunk, as a model's are, but not one turn of the loop per token: each
    # stream takes UNPACED_TURN_TOKENS chunks per turn, after its first token alone.
    config = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0, unpaced_chunk_tokens=1)
    runs = await _chunks_per_turn(config)
    assert len(tokens(write_screenplay(BRIEF))) > 4 * UNPACED_TURN_TOKENS
    assert runs[:2] == [1, 1]  # each stream's first token goes out alone, at once
    assert max(runs) == UNPACED_TURN_TOKENS
    assert all(run == UNPACED_TURN_TOKENS for run in runs[2:-2]), runs


async def test_a_turn_holds_whole_chunks_up_to_its_tokens_and_a_large_chunk_alone() -> None:
    # 5-token chunks: six of them (30 tokens) per turn, never a seventh (35).
    five = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0, unpaced_chunk_tokens=5)
    runs = await _chunks_per_turn(five)
    assert runs[:2] == [1, 1]
    assert max(runs) == UNPACED_TURN_TOKENS // 5
    assert all(run == UNPACED_TURN_TOKENS // 5 for run in runs[2:-2]), runs
    # The default, chunks larger than a turn: one chunk per turn, as ever.
    large = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0, episode_minutes=10)
    assert set(await _chunks_per_turn(large)) == {1}


async def test_a_continuation_picks_up_after_the_partial_text() -> None:
    script = write_screenplay(BRIEF)
    partial = script[: len(script) // 2]
    config = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0)
    chunks, _ = await _chunks(config, partial)
    assert partial + "".join(chunks) == script


def test_episode_minutes_is_the_length_when_the_project_sets_none() -> None:
    short = len(tokens(write_screenplay(BRIEF)))
    twenty = len(tokens(write_screenplay(BRIEF, 20)))
    assert short < 300 < 2000 < twenty
    project = project_pb2.Project(name="projects/pace", title="Pace", target_episode_minutes=1)
    own = Brief(project=project, title="Deadlines", description="", episode_number=1)
    assert write_screenplay(own, 20) == write_screenplay(own)  # the project's length wins
