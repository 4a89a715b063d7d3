"""The provider router with the real OpenAI and Anthropic SDKs against the stand-in over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import anthropic
import openai
import pytest
from scriptgen.v1 import generation_pb2, project_pb2

from server.config import RouterConfig, SyntheticConfig, build_providers
from server.errors import DeadlineExceeded, Unavailable
from server.metrics import CoreMetrics
from server.providers import factory
from server.providers.anthropic_messages import AnthropicMessagesProvider
from server.providers.base import Brief, Prompt, Provider, TokenUsage
from server.providers.breaker import BreakerState, CircuitBreaker
from server.providers.errors import WORKER_LOST, ProviderFailure
from server.providers.factory import build_providers as build_stage_providers
from server.providers.openai_chat import OpenAIChatProvider
from server.providers.router import WORKER_LOSSES_PER_CALL, ProviderRouter, UsageTotal
from server.providers.synthetic import tokens
from tests.standins.llm_standin import LlmStandin, Reply, core_anthropic_client, core_openai_client

SCRIPT = (
    "INT. RADIO STATION - NIGHT\n\nMAYA leans into the microphone.\n\n"
    "MAYA\nThis is the last song tonight.\n\nJONAH\nMake it count.\n\n> FADE OUT.\n"
)
PROMPT = Prompt(
    generation_pb2.STAGE_WRITE,
    "system",
    "write it",
    Brief(project_pb2.Project(name="projects/p", title="T"), "Pilot", "", 1),
)


class Sleeps:
    """Records the router's backoff delays instead of sleeping them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sdk_providers(standin: LlmStandin) -> AsyncIterator[tuple[Provider, Provider]]:
    # As the core builds them (server.providers.factory).
    oa, an = core_openai_client(standin), core_anthropic_client(standin)
    try:
        yield OpenAIChatProvider(oa, "gpt-test"), AnthropicMessagesProvider(an, "claude-test")
    finally:
        await oa.close()
        await an.close()


def make_router(
    sleeps: Sleeps | None = None,
    clock: Clock | None = None,
    metrics: CoreMetrics | None = None,
    **settings: Any,
) -> ProviderRouter:
    config = RouterConfig(
        **{"first_token_timeout_seconds": 2.0, "idle_timeout_seconds": 2.0, **settings}
    )
    return ProviderRouter(
        ["openai", "anthropic"],
        config,
        metrics or CoreMetrics(),
        sleep=sleeps or Sleeps(),
        clock=clock or time.monotonic,
    )


async def collect(
    router: ProviderRouter,
    chain: list[Provider],
    usage: dict[tuple[str, str], UsageTotal] | None = None,
    switches: list[tuple[str, str, str, int]] | None = None,
    deadline: float | None = None,
) -> list[str]:
    async def on_switch(source: str, target: str, reason: str, offset: int) -> None:
        if switches is not None:
            switches.append((source, target, reason, offset))

    chunks: list[str] = []
    stream = router.stream(
        "write",
        PROMPT,
        chain,
        usage if usage is not None else {},
        on_switch=on_switch,
        deadline=deadline,
    )
    async with aclosing(stream):
        async for chunk in stream:
            chunks.append(chunk)
    return chunks


async def test_openai_and_anthropic_stream_the_text_with_reported_usage(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(text=SCRIPT, input_tokens=21, output_tokens=17)]
    standin.anthropic = [Reply(text=SCRIPT, input_tokens=31, output_tokens=19)]
    router = make_router()
    usage: dict[tuple[str, str], UsageTotal] = {}
    for provider in sdk_providers:
        assert "".join(await collect(router, [provider], usage)) == SCRIPT
    assert usage[("openai", "gpt-test")].input_tokens == 21
    assert usage[("openai", "gpt-test")].output_tokens == 17
    assert usage[("anthropic", "claude-test")].input_tokens == 31
    assert usage[("anthropic", "claude-test")].output_tokens == 19
    assert standin.of("openai")[0].body["stream_options"] == {"include_usage": True}
    assert standin.of("anthropic")[0].body["system"] == "system"


async def test_the_openai_request_is_the_one_completions_create_sends(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    # The provider posts its body through the SDK's generic `post` (no typed-parameter walk):
    # the server must see what the SDK's own `chat.completions.create` sends.
    openai_provider = sdk_providers[0]
    standin.openai = [Reply(text=SCRIPT)]
    assert "".join(await collect(make_router(), [openai_provider], {})) == SCRIPT
    client = openai.AsyncOpenAI(base_url=f"{standin.url}/v1", api_key="test", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="gpt-test",
            messages=[
                {"role": "system", "content": PROMPT.system},
                {"role": "user", "content": PROMPT.user},
            ],
            max_completion_tokens=8192,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for _ in stream:
                pass
    finally:
        await client.close()
    ours, sdks = standin.of("openai")
    assert ours.target == sdks.target == "/v1/chat/completions"
    assert ours.body == sdks.body
    # Per-request headers differ by nature (the SDK's raw-response marker, timeouts, retry
    # counts, idempotency); what identifies and authorises the call must be the same.
    for header in ("authorization", "content-type", "accept", "user-agent", "x-stainless-lang"):
        assert ours.headers.get(header) == sdks.headers.get(header), header


async def test_the_local_provider_sends_its_output_cap_as_max_tokens(standin: LlmStandin) -> None:
    # Ollama's OpenAI-compatible API (and llama.cpp's, older vLLM's) reads only `max_tokens`.
    config = build_providers(
        chain="local", local_base_url=f"{standin.url}/v1", local_model="llama-test"
    )
    stages = build_stage_providers(config, SyntheticConfig())
    standin.openai = [Reply(text=SCRIPT)]
    try:
        router = ProviderRouter(["local"], RouterConfig(), CoreMetrics())
        assert "".join(await collect(router, stages.write, {})) == SCRIPT
    finally:
        await stages.aclose()
    body = standin.of("openai")[0].body
    assert body["max_tokens"] == RouterConfig().max_output_tokens
    assert "max_completion_tokens" not in body


async def test_the_local_provider_takes_its_own_output_cap_and_can_go_without_usage(
    standin: LlmStandin,
) -> None:
    # A small local model's context may hold less than the general cap, and some servers
    # refuse `stream_options`: both are the local provider's own settings.
    config = build_providers(
        chain="local",
        local_base_url=f"{standin.url}/v1",
        local_model="llama-test",
        local_max_output_tokens=2048,
        local_include_usage=False,
    )
    stages = build_stage_providers(config, SyntheticConfig())
    standin.openai = [Reply(text=SCRIPT)]
    try:
        router = ProviderRouter(["local"], RouterConfig(), CoreMetrics())
        assert "".join(await collect(router, stages.write, {})) == SCRIPT
    finally:
        await stages.aclose()
    body = standin.of("openai")[0].body
    assert body["max_tokens"] == 2048
    assert "stream_options" not in body
    with pytest.raises(ValueError, match="--local-max-output-tokens"):
        build_providers(
            chain="local", local_base_url=f"{standin.url}/v1", local_max_output_tokens=-1
        )


async def test_the_anthropic_request_is_the_one_messages_create_sends(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    anthropic_provider = sdk_providers[1]
    standin.anthropic = [Reply(text=SCRIPT)]
    assert "".join(await collect(make_router(), [anthropic_provider], {})) == SCRIPT
    client = anthropic.AsyncAnthropic(base_url=standin.url, api_key="test", max_retries=0)
    try:
        stream = await client.messages.create(
            model="claude-test",
            system=PROMPT.system,
            messages=[{"role": "user", "content": PROMPT.user}],
            max_tokens=8192,
            stream=True,
        )
        async with stream:
            async for _ in stream:
                pass
    finally:
        await client.close()
    ours, sdks = standin.of("anthropic")
    assert ours.body == sdks.body
    for header in (
        "x-api-key",
        "anthropic-version",
        "content-type",
        "accept",
        "user-agent",
        "x-stainless-lang",
    ):
        assert ours.headers.get(header) == sdks.headers.get(header), header


async def test_a_429_is_retried_after_its_retry_after(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(status=429, retry_after="3"), Reply(text=SCRIPT)]
    sleeps = Sleeps()
    router = make_router(sleeps)
    assert "".join(await collect(router, [sdk_providers[0]])) == SCRIPT
    assert len(standin.of("openai")) == 2
    assert sleeps.delays and sleeps.delays[0] >= 3.0


@pytest.mark.parametrize(
    "fault",
    [
        Reply(status=500),
        Reply(status=503),
        Reply(malformed_after=0),
        Reply(cut_after=0),
    ],
    ids=["500", "503", "malformed", "cut-before-text"],
)
async def test_retryable_faults_before_the_first_token_are_retried(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], fault: Reply
) -> None:
    standin.anthropic = [fault, Reply(text=SCRIPT)]
    router = make_router()
    assert "".join(await collect(router, [sdk_providers[1]])) == SCRIPT
    assert len(standin.of("anthropic")) == 2


async def test_retries_then_fallback_in_chain_order(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(status=500)]
    standin.anthropic = [Reply(text=SCRIPT)]
    switches: list[tuple[str, str, str, int]] = []
    router = make_router(max_attempts=3)
    assert "".join(await collect(router, list(sdk_providers), switches=switches)) == SCRIPT
    assert [r.api for r in standin.requests] == ["openai"] * 3 + ["anthropic"]
    assert switches == [("openai", "anthropic", "server_error", 0)]


@pytest.mark.parametrize("status", [400, 401])
async def test_a_non_retryable_failure_moves_on_at_once(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], status: int
) -> None:
    standin.openai = [Reply(status=status)]
    standin.anthropic = [Reply(text=SCRIPT)]
    sleeps = Sleeps()
    router = make_router(sleeps, max_attempts=3)
    assert "".join(await collect(router, list(sdk_providers))) == SCRIPT
    assert [r.api for r in standin.requests] == ["openai", "anthropic"]
    assert sleeps.delays == []


async def test_a_hang_before_the_first_token_times_out_and_closes_the_request(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(hang_seconds=30)]
    standin.anthropic = [Reply(text=SCRIPT)]
    router = make_router(max_attempts=1, first_token_timeout_seconds=0.3)
    assert "".join(await collect(router, list(sdk_providers))) == SCRIPT
    hung = standin.of("openai")[0]
    await asyncio.wait_for(hung.ended.wait(), 5)
    assert hung.client_closed and not hung.finished


async def test_the_callers_deadline_ends_the_attempt(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(hang_seconds=30)]
    router = make_router()
    with pytest.raises(DeadlineExceeded):
        await collect(router, list(sdk_providers), deadline=time.monotonic() + 0.3)
    await asyncio.wait_for(standin.of("openai")[0].ended.wait(), 5)
    assert standin.of("openai")[0].client_closed
    assert standin.of("anthropic") == []


@pytest.mark.parametrize("fault", ["cut", "malformed"])
async def test_mid_stream_failover_neither_repeats_nor_drops_text(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], fault: str
) -> None:
    cut = 42  # a chunk boundary: the stand-in sends 6 characters per chunk
    standin.anthropic = [
        Reply(
            text=SCRIPT,
            cut_after=cut if fault == "cut" else None,
            malformed_after=cut if fault == "malformed" else None,
        )
    ]

    def continuation(body: dict[str, Any]) -> str:
        partial = next(m for m in reversed(body["messages"]) if m["role"] == "assistant")
        # Asked to "continue", a model that restarts the line it was cut in: repeats the
        # last part of the partial. (A prefill, Anthropic's, cannot: it writes on from it.)
        restart = str(partial["content"]).rfind("\n") + 1
        return SCRIPT[restart:]

    standin.openai = [Reply(text=continuation, input_tokens=50, output_tokens=30)]
    usage: dict[tuple[str, str], UsageTotal] = {}
    switches: list[tuple[str, str, str, int]] = []
    router = make_router()
    chunks = await collect(router, [sdk_providers[1], sdk_providers[0]], usage, switches)
    assert "".join(chunks) == SCRIPT
    delivered_by_anthropic = standin.of("anthropic")[0].sent
    assert len(delivered_by_anthropic) == cut
    kind = "connection" if fault == "cut" else "malformed"
    assert switches == [("anthropic", "openai", kind, cut)]
    continued = standin.of("openai")[0]
    assert continued.partial == SCRIPT[:cut]
    assert continued.body["messages"][-1]["role"] == "user"
    assert usage[("openai", "gpt-test")].output_tokens == 30
    assert usage[("anthropic", "claude-test")].output_tokens > 1  # estimated for the cut stream


async def test_breaker_opens_half_opens_and_closes(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    clock = Clock()
    router = make_router(
        clock=clock, max_attempts=1, breaker_failures=2, breaker_cooldown_seconds=10
    )
    breaker = router.breakers["openai"]
    standin.openai = [Reply(status=500)]
    standin.anthropic = [Reply(text=SCRIPT)]
    for _ in range(2):
        await collect(router, list(sdk_providers))
    assert breaker.state == BreakerState.OPEN
    assert not router.usable(["openai"]) and router.usable()

    await collect(router, list(sdk_providers))
    assert len(standin.of("openai")) == 2, "an open breaker is skipped"

    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN  # type: ignore[comparison-overlap]
    standin.openai = [Reply(text=SCRIPT)]
    assert "".join(await collect(router, list(sdk_providers))) == SCRIPT
    assert breaker.state == BreakerState.CLOSED
    assert len(standin.of("openai")) == 3


async def test_every_provider_failing_is_unavailable(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(status=401)]
    standin.anthropic = [Reply(status=403)]
    with pytest.raises(Unavailable) as raised:
        await collect(make_router(), list(sdk_providers))
    assert raised.value.reason == "PROVIDERS_UNAVAILABLE"


async def _first_request_began(standin: LlmStandin) -> None:
    await standin.arrived.wait()
    await standin.requests[0].began.wait()


async def test_cancelling_the_consumer_closes_the_providers_http_stream(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(text=SCRIPT * 20, chunk_delay=0.05)]
    router = make_router()
    task = asyncio.create_task(collect(router, [sdk_providers[0]]))
    await asyncio.wait_for(_first_request_began(standin), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    request = standin.of("openai")[0]
    await asyncio.wait_for(request.ended.wait(), 2)
    assert request.client_closed and not request.finished
    assert router.breakers["openai"].state == BreakerState.CLOSED


async def test_usage_a_provider_does_not_report_is_counted_as_the_synthetic_tokens(
    standin: LlmStandin,
) -> None:
    # An OpenAI-compatible server that sends no usage chunk (include_usage off): the router
    # counts the prompt and the text itself, as many tokens as `tokens` splits them into.
    client = core_openai_client(standin)
    standin.openai = [Reply(text=SCRIPT)]
    usage: dict[tuple[str, str], UsageTotal] = {}
    try:
        provider = OpenAIChatProvider(client, "gpt-test", include_usage=False)
        assert "".join(await collect(make_router(), [provider], usage)) == SCRIPT
    finally:
        await client.close()
    counted = usage[("openai", "gpt-test")]
    assert counted.input_tokens == len(tokens(PROMPT.system + PROMPT.user)) == 2
    assert counted.output_tokens == len(tokens(SCRIPT)) == 24


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1/",
        "https://api.example.com",
        # The SDK joins the path after a base URL's query (".../d/?api-version=...chat/..."):
        # not a form that works, but the provider must send what the SDK would.
        "https://example.com/openai/deployments/d?api-version=2024-10-01",
        "http://[::1]:8080/proxy/v1",
    ],
)
def test_the_chat_url_is_the_one_the_sdk_joins_to_its_base_url(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test")
    provider = OpenAIChatProvider(client, "gpt-test")
    # The SDK's own join of the relative path the provider posted to before.
    assert provider.chat_url() == str(client._prepare_url("/chat/completions"))
    # Made once: the client hands out the same base URL object until it is set anew.
    assert client.base_url is client.base_url
    assert provider.chat_url() is provider.chat_url()


async def test_a_changed_base_url_sends_the_next_request_to_it(standin: LlmStandin) -> None:
    second = LlmStandin()
    await second.start()
    client = core_openai_client(standin)
    try:
        provider = OpenAIChatProvider(client, "gpt-test")
        standin.openai = second.openai = [Reply(text=SCRIPT)]
        assert "".join(await collect(make_router(), [provider], {})) == SCRIPT
        client.base_url = f"{second.url}/v1"
        assert "".join(await collect(make_router(), [provider], {})) == SCRIPT
    finally:
        await client.close()
        await second.stop()
    assert len(standin.of("openai")) == 1 and len(second.of("openai")) == 1


class _LosesItsWorker:
    """A provider whose calls end as a provider worker's exit would end them (`worker_lost`),
    after `text` on the first call; it can open its own breaker first, as other calls
    failing meanwhile would."""

    name = "openai"
    model = "gpt-test"

    def __init__(self, text: str = "", open_breaker: CircuitBreaker | None = None) -> None:
        self._text = text
        self._open_breaker = open_breaker
        self.partials: list[str] = []

    async def stream(self, prompt: Prompt, usage: TokenUsage) -> AsyncIterator[str]:
        self.partials.append(prompt.partial)
        if self._text and len(self.partials) == 1:
            yield self._text
        if self._open_breaker is not None:
            while self._open_breaker.allow():
                self._open_breaker.record_failure()
        raise ProviderFailure(self.name, WORKER_LOST, "the provider worker exited")


async def test_a_call_that_keeps_losing_workers_moves_on_without_charging_the_breaker(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    """A call that may be what ends its workers ends at most WORKER_LOSSES_PER_CALL + 1."""
    standin.anthropic = [Reply(text=lambda body: SCRIPT[len(body["messages"][-1]["content"]) :])]
    losing = _LosesItsWorker(text=SCRIPT[:12])
    router = make_router()
    switches: list[tuple[str, str, str, int]] = []
    chunks = await collect(router, [losing, sdk_providers[1]], switches=switches)
    assert "".join(chunks) == SCRIPT
    assert losing.partials == ["", SCRIPT[:12], SCRIPT[:12]]
    assert len(losing.partials) == WORKER_LOSSES_PER_CALL + 1
    assert switches == [("openai", "anthropic", WORKER_LOST, 12)]
    breaker = router.breakers["openai"]
    assert (breaker.state, breaker._failures) == (BreakerState.CLOSED, 0)


async def test_a_breaker_opened_while_a_call_lost_its_worker_is_a_switch(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.anthropic = [Reply(text=SCRIPT)]
    router = make_router()
    losing = _LosesItsWorker(open_breaker=router.breakers["openai"])
    switches: list[tuple[str, str, str, int]] = []
    chunks = await collect(router, [losing, sdk_providers[1]], switches=switches)
    assert "".join(chunks) == SCRIPT
    assert len(losing.partials) == 1
    assert switches == [("openai", "anthropic", WORKER_LOST, 0)]


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listener's accept queue is full: a new connection's SYN goes unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    waiting = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        waiting.append(filler)
    try:
        yield port
    finally:
        for filler in waiting:
            filler.close()
        listener.close()


async def test_a_connection_that_is_never_accepted_times_out_as_a_connect_timeout(
    standin: LlmStandin, unanswered_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(factory, "SDK_CONNECT_TIMEOUT_SECONDS", 0.3)
    config = build_providers(
        chain="openai,anthropic",
        openai_api_key="test",
        openai_base_url=f"http://127.0.0.1:{unanswered_port}/v1",
        openai_model="gpt-test",
        anthropic_api_key="test",
        anthropic_base_url=standin.url,
        anthropic_model="claude-test",
    )
    stages = build_stage_providers(config, SyntheticConfig())
    standin.anthropic = [Reply(text=SCRIPT)]
    switches: list[tuple[str, str, str, int]] = []
    router = make_router(max_attempts=1, first_token_timeout_seconds=10.0)
    started = time.monotonic()
    try:
        assert "".join(await collect(router, stages.write, switches=switches)) == SCRIPT
    finally:
        await stages.aclose()
    assert switches == [("openai", "anthropic", "timeout", 0)]
    assert time.monotonic() - started < 5.0


def test_the_sdk_clients_time_their_connects_apart() -> None:
    timeout = factory.sdk_timeout()
    assert timeout.connect == factory.SDK_CONNECT_TIMEOUT_SECONDS < 10
    assert timeout.read == timeout.write == timeout.pool == factory.SDK_TIMEOUT_SECONDS
