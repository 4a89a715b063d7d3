"""Item 1: the LLM provider dies mid-stream, or hangs before its first token.

OpenAI and Anthropic are two separate stand-in servers. Killing the OpenAI one
while it streams (its listener and every connection closed) must make the job
continue on Anthropic from the text already delivered; a hung OpenAI must be
abandoned after the first-token timeout. Either way the deltas, the Completed
episode and the stored episode all equal the script, with no text repeated or lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from scriptgen.v1 import generation_pb2
from scriptgen.v1 import project_service_pb2 as ps

from server import Core
from tests.server.rpc import connect, script_of
from tests.standins.llm_standin import LlmStandin, Reply

OUTLINE = "1. Cold open.\n2. The turn.\n3. The button.\n"
SCRIPT = (
    "INT. DINER - NIGHT\n\nGRACE stirs her coffee. Rain on the glass.\n\n"
    "GRACE\nYou came back.\n\nTHEO\nI never left.\n\nCUT TO:\n\n"
    "EXT. ROOFTOP - DAWN\n\nThey watch the city wake.\n\n"
    "GRACE\n(quietly)\nThen stay.\n\n> FADE OUT.\n"
)


def _continuation(restart_line: bool) -> Callable[[dict[str, Any]], str]:
    """Anthropic's reply: the rest of SCRIPT after the partial text it is asked to continue.

    With `restart_line`, it repeats the start of the line it was cut in, as models asked
    with a user turn to continue do (`anthropic_standin.refuses_prefill`: an assistant
    prefill is written on from its last character); the router must not deliver that
    overlap twice.
    """

    def reply(body: dict[str, Any]) -> str:
        assistant = [m for m in body["messages"] if m["role"] == "assistant"]
        partial = str(assistant[-1]["content"]) if assistant else ""
        assert SCRIPT.startswith(partial), partial
        start = partial.rfind("\n") + 1 if restart_line else len(partial)
        return SCRIPT[start:]

    return reply


def _check_stream(events: list[generation_pb2.GenerationEvent], saved: str) -> None:
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    kinds = [e.WhichOneof("kind") for e in events]
    assert sum(k in {"completed", "failed", "cancelled"} for k in kinds) == 1
    assert events[-1].HasField("completed"), events[-1]
    texts = [e.text_delta for e in events if e.HasField("text_delta")]
    assert [t.offset for t in texts] == [
        sum(len(x.text) for x in texts[:i]) for i in range(len(texts))
    ]
    assert script_of(events) == events[-1].completed.episode.script == saved == SCRIPT


async def _generate(core: Core) -> tuple[list[generation_pb2.GenerationEvent], str]:
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
        events = await asyncio.wait_for(rpc.generate(project.name), 30)
        assert events[-1].HasField("completed"), events[-1]
        saved = await rpc.projects.GetEpisode(
            ps.GetEpisodeRequest(name=events[-1].completed.episode.name)
        )
    return events, saved.episode.script


#: Cut points: mid-word, at a line start, mid-line with 4+ characters of the line written.
#: (A cut 1-3 characters into a line with a line-restarting continuation repeats text:
#: see RELIABILITY.md, Known gaps, and scratch/faults/test_short_line_restart.py.)
CUTS = [7, 20, 64, 76, 101, 150]


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("restart_line", [False, True], ids=["exact", "restarts-line"])
async def test_the_connection_dying_mid_stream_fails_over_without_repeating_text(
    failover_core: Core,
    openai_standin: LlmStandin,
    anthropic_standin: LlmStandin,
    cut: int,
    restart_line: bool,
) -> None:
    openai_standin.openai = [Reply(text=OUTLINE), Reply(text=SCRIPT, chunk_chars=1, cut_after=cut)]
    anthropic_standin.anthropic = [Reply(text=_continuation(restart_line))]
    anthropic_standin.refuses_prefill = restart_line
    events, saved = await _generate(failover_core)
    _check_stream(events, saved)
    switched = [e.provider_switched for e in events if e.HasField("provider_switched")]
    assert [(s.from_provider, s.to_provider, s.offset) for s in switched] == [
        ("openai", "anthropic", cut)
    ]
    # Anthropic refuses a prefill ending in whitespace, so it is asked with it trimmed.
    assert anthropic_standin.of("anthropic")[0].partial == SCRIPT[:cut].rstrip()


async def test_the_provider_process_dying_mid_stream_fails_over_without_repeating_text(
    failover_core: Core, openai_standin: LlmStandin, anthropic_standin: LlmStandin
) -> None:
    openai_standin.openai = [
        Reply(text=OUTLINE),
        Reply(text=SCRIPT, chunk_chars=1, chunk_delay=0.01),
    ]
    anthropic_standin.anthropic = [Reply(text=_continuation(restart_line=False))]

    async def kill_openai_mid_script() -> None:
        for _ in range(4000):  # 20 s at most
            requests = openai_standin.of("openai")
            if len(requests) >= 2 and len(requests[1].sent) >= len(SCRIPT) // 2:
                break
            await asyncio.sleep(0.005)
        await openai_standin.stop()  # the whole server goes: listener and connections

    killer = asyncio.create_task(kill_openai_mid_script())
    events, saved = await _generate(failover_core)
    await killer
    _check_stream(events, saved)
    switched = [e.provider_switched for e in events if e.HasField("provider_switched")]
    assert [(s.from_provider, s.to_provider) for s in switched] == [("openai", "anthropic")]
    delivered = len(openai_standin.of("openai")[1].sent)
    assert len(SCRIPT) // 2 <= switched[0].offset <= delivered


async def test_a_provider_hanging_before_its_first_token_times_out_and_fails_over(
    failover_core: Core, openai_standin: LlmStandin, anthropic_standin: LlmStandin
) -> None:
    openai_standin.openai = [Reply(text=OUTLINE), Reply(text=SCRIPT, hang_seconds=60)]
    anthropic_standin.anthropic = [Reply(text=SCRIPT)]
    started = time.monotonic()
    events, saved = await _generate(failover_core)
    elapsed = time.monotonic() - started
    _check_stream(events, saved)
    hung = openai_standin.of("openai")[1]
    await asyncio.wait_for(hung.ended.wait(), 5)
    assert hung.client_closed and hung.sent == ""  # the core hung up; nothing was taken
    assert anthropic_standin.of("anthropic")[0].partial == ""
    switched = [e.provider_switched for e in events if e.HasField("provider_switched")]
    assert [(s.from_provider, s.to_provider, s.offset) for s in switched] == [
        ("openai", "anthropic", 0)
    ]
    assert elapsed < 10  # first-token timeout 0.5 s, not the 60 s hang


async def test_a_provider_dead_before_the_job_fails_over_at_once(
    failover_core: Core, openai_standin: LlmStandin, anthropic_standin: LlmStandin
) -> None:
    await openai_standin.stop()  # connection refused from the first request on
    anthropic_standin.anthropic = [Reply(text=OUTLINE), Reply(text=SCRIPT)]
    events, saved = await _generate(failover_core)
    _check_stream(events, saved)
    assert openai_standin.requests == []
