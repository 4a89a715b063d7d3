"""Paced reads of a provider's streamed body: fewer reads, the same text, no stuck connection.

The real `openai` and `anthropic` SDKs over the core's HTTP transport
(`server.providers.http_transport`) against the LLM stand-in, over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import NoReturn, cast

import httpx2
import pytest
from scriptgen.v1 import generation_pb2, project_pb2

from server.events.memory import MemoryEventLog
from server.jobs.coalescer import DeltaCoalescer
from server.jobs.emitter import JobEvents
from server.metrics import CoreMetrics
from server.providers.anthropic_messages import AnthropicMessagesProvider
from server.providers.base import Brief, Prompt, Provider, TokenUsage
from server.providers.body_pacing import READ_LEAD_SECONDS, paced_reads
from server.providers.errors import ProviderFailure
from server.providers.http_transport import AiohttpTransport, sdk_transport
from server.providers.openai_chat import OpenAIChatProvider
from tests.standins.llm_standin import (
    LlmStandin,
    Reply,
    core_anthropic_client,
    core_openai_client,
)

TEXT = "".join(f"word{index:03d} " for index in range(60))
PROMPT = Prompt(
    generation_pb2.STAGE_WRITE,
    "You write screenplays.",
    "Write.",
    Brief(project_pb2.Project(title="Pacing"), "Pilot", "", 1),
)


class FixedHold:
    """Reads again `hold` seconds after each read once the first text is in, and `final`
    seconds after once all of it is (only the end of the body is left)."""

    def __init__(self, hold: float, final: float | None = None) -> None:
        self.hold = hold
        self.final = hold if final is None else final
        self.began = False
        self.done = False

    def resume_at(self) -> float | None:
        if not self.began:
            return None
        return asyncio.get_running_loop().time() + (self.final if self.done else self.hold)


@pytest.fixture(params=["openai", "anthropic"])
async def provider(request: pytest.FixtureRequest, standin: LlmStandin) -> AsyncIterator[Provider]:
    """Each SDK as the core builds it: its aiohttp client over the core's transport."""
    if request.param == "openai":
        oa = core_openai_client(standin)
        try:
            yield OpenAIChatProvider(oa, "gpt-test")
        finally:
            await oa.close()
    else:
        an = core_anthropic_client(standin)
        try:
            yield AnthropicMessagesProvider(an, "claude-test")
        finally:
            await an.close()


def _reply(**kwargs: object) -> Reply:
    return Reply(text=TEXT, chunk_chars=8, **kwargs)  # type: ignore[arg-type]


async def _pieces(provider: Provider, pacing: FixedHold | None) -> tuple[list[str], float]:
    """What the provider yielded (one piece per read), and when its first text came."""
    pieces: list[str] = []
    started = asyncio.get_running_loop().time()
    first = 0.0

    async def read() -> None:
        nonlocal first
        async for text in provider.stream(PROMPT, TokenUsage()):
            if not pieces:
                first = asyncio.get_running_loop().time() - started
            pieces.append(text)
            if pacing is not None:
                pacing.began = True
                pacing.done = "".join(pieces) == TEXT

    if pacing is None:
        await asyncio.wait_for(read(), 20)
    else:
        with paced_reads(pacing):
            await asyncio.wait_for(read(), 20)
    return pieces, first


async def _read_paced(provider: Provider, pacing: FixedHold, pieces: list[str]) -> None:
    """Read the provider's text paced into `pieces`, whatever it raises at the end."""
    with paced_reads(pacing):
        async for text in provider.stream(PROMPT, TokenUsage()):
            pieces.append(text)
            pacing.began = True


async def test_a_paced_body_is_read_in_few_reads_with_the_same_text(
    standin: LlmStandin, provider: Provider
) -> None:
    chunks = -(-len(TEXT) // 8)  # 60 chunks, one every 10 ms
    standin.openai = [_reply(chunk_delay=0.01)]
    standin.anthropic = [_reply(chunk_delay=0.01)]
    unpaced, _ = await _pieces(provider, None)
    paced, first = await _pieces(provider, FixedHold(0.08))
    assert "".join(unpaced) == TEXT
    assert "".join(paced) == TEXT
    # Held 80 ms after each read, the ~0.6 s body comes in a handful of reads, not in 60.
    assert len(paced) <= 15, (len(paced), chunks)
    assert len(unpaced) > 2 * len(paced), (len(unpaced), len(paced))
    # The first text is not held: nothing is held before it.
    assert first < 0.5


async def test_a_held_connection_goes_back_to_the_pool_reading(
    standin: LlmStandin, provider: Provider
) -> None:
    standin.openai = [_reply(chunk_delay=0.005)]
    standin.anthropic = [_reply(chunk_delay=0.005)]
    for _ in range(2):
        # The end of the body comes after a long hold; a connection that went back to the
        # pool paused (or held on) would keep the next request on it waiting.
        pieces, _ = await _pieces(provider, FixedHold(0.05, final=0.9))
        assert "".join(pieces) == TEXT
        pieces, first = await _pieces(provider, None)
        assert "".join(pieces) == TEXT
        assert first < 0.5


async def test_closing_a_held_body_ends_the_request(
    standin: LlmStandin, provider: Provider
) -> None:
    standin.openai = [_reply(chunk_delay=0.05), _reply()]
    standin.anthropic = [_reply(chunk_delay=0.05), _reply()]
    pacing = FixedHold(5.0)  # every hold outlasts the test
    with paced_reads(pacing):
        stream = cast(AsyncGenerator[str, None], provider.stream(PROMPT, TokenUsage()))
        first = await asyncio.wait_for(anext(stream), 5)
        pacing.began = True
        second = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.1)
        assert not second.done()  # held: the body is not read
        second.cancel()
        await asyncio.wait_for(stream.aclose(), 5)
    assert first and TEXT.startswith(first)
    record = standin.requests[-1]
    await asyncio.wait_for(record.ended.wait(), 5)
    assert record.client_closed and not record.finished
    pieces, _ = await _pieces(provider, None)
    assert "".join(pieces) == TEXT


async def test_text_read_before_a_cut_connection_is_delivered_then_the_failure(
    standin: LlmStandin, provider: Provider
) -> None:
    standin.openai = [_reply(chunk_delay=0.005, cut_after=200)]
    standin.anthropic = [_reply(chunk_delay=0.005, cut_after=200)]
    pieces: list[str] = []
    with pytest.raises(ProviderFailure) as failure:
        await _read_paced(provider, FixedHold(0.05), pieces)
    assert failure.value.kind == "connection"
    assert "".join(pieces) == TEXT[:200]


async def test_text_read_with_a_malformed_chunk_is_delivered_before_the_failure(
    standin: LlmStandin, provider: Provider
) -> None:
    # No delay: the text and the malformed chunk after it come in the same read or two.
    standin.openai = [_reply(malformed_after=40)]
    standin.anthropic = [_reply(malformed_after=40)]
    pieces: list[str] = []
    with pytest.raises(ProviderFailure) as failure:
        await _read_paced(provider, FixedHold(0.05), pieces)
    assert failure.value.kind == "malformed"
    assert "".join(pieces) == TEXT[:40]


def test_behind_an_outbound_proxy_the_sdks_own_transport_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(sdk_transport(), AiohttpTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert sdk_transport() is None  # the SDK's client then mounts its proxy transport


async def test_the_tls_context_is_made_with_the_transport_not_at_its_first_request(
    provider: Provider, standin: LlmStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the CA bundle takes tens of milliseconds of the loop: at start-up, not in the
    first request of a burst."""

    def loaded_late(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("the TLS context was made at a request")

    monkeypatch.setattr(httpx2, "create_ssl_context", loaded_late)
    standin.openai = [_reply()]
    standin.anthropic = [_reply()]
    pieces, _ = await _pieces(provider, None)
    assert "".join(pieces) == TEXT


async def test_the_coalescer_asks_for_reads_just_before_its_cuts() -> None:
    log = MemoryEventLog()
    await log.create("generations/g1")
    deltas = DeltaCoalescer(JobEvents("generations/g1", log, CoreMetrics(), 0), 0.1)
    loop = asyncio.get_running_loop()
    assert deltas.resume_at() is None  # before the first chunk: read at once
    await deltas.add("first")  # goes out at once
    after_first = deltas.resume_at()
    assert after_first is not None and loop.time() < after_first <= loop.time() + 0.1
    await deltas.add("second")  # waits for the timed cut
    due = deltas.resume_at()
    assert due is not None and due + READ_LEAD_SECONDS > loop.time()
    await asyncio.sleep(max(0.0, due - loop.time()) + 0.001)
    # Read for this cut: what comes next goes with the one after it (unless the loop was
    # so late that this one has passed too: then at once).
    following = deltas.resume_at()
    if loop.time() < due + 0.05:
        assert following is not None
    assert following is None or following >= due + 0.1 - 0.03
    await deltas.close()
    await log.create("generations/g2")
    unpaced = DeltaCoalescer(JobEvents("generations/g2", log, CoreMetrics(), 0), 0.0)
    await unpaced.add("word")
    assert unpaced.resume_at() is None  # the per-token relay: never held
