"""How a model's stream ends, and what the router makes of it: the real SDKs against the stand-in.

Stop reasons (output cap, refusals), bodies that end without their end marker or stay open
after it, error events inside a 200 stream, Retry-After beyond the longest backoff, failures
that must not charge a breaker, Anthropic's prefill refusal, and usage on a cut stream.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anthropic
import httpx2
import pytest

from server.errors import DeadlineExceeded, Unavailable
from server.metrics import CoreMetrics
from server.providers.anthropic_messages import AnthropicMessagesProvider
from server.providers.base import CONTINUE_INSTRUCTION, Provider
from server.providers.breaker import BreakerState
from server.providers.http_transport import AiohttpTransport
from server.providers.router import MAX_CONTINUATIONS, UsageTotal
from server.providers.synthetic import token_count
from tests.server.test_provider_router import (
    SCRIPT,
    Sleeps,
    collect,
    make_router,
    sdk_providers,
)
from tests.standins.llm_standin import LlmStandin, Reply

__all__ = ["sdk_providers"]  # the fixture, used here by name

CUT = 42  # a chunk boundary (the stand-in sends 6 characters a chunk), not after whitespace
API = {"openai": 0, "anthropic": 1}
#: The stop reason that means "cut at the output cap", per API.
OUTPUT_CAP = {"openai": "length", "anthropic": "max_tokens"}


def _partial(body: dict[str, Any]) -> str:
    """The text a request asks the model to continue (its last assistant turn)."""
    assistant = [m for m in body["messages"] if m["role"] == "assistant"]
    return str(assistant[-1]["content"]) if assistant else ""


def _rest_of_script(body: dict[str, Any]) -> str:
    """A model that continues exactly where the partial stops."""
    return SCRIPT[len(_partial(body)) :]


def _switches() -> list[tuple[str, str, str, int]]:
    return []


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_text_cut_at_the_output_cap_is_continued_by_the_same_provider(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], api: str
) -> None:
    replies = [
        Reply(text=SCRIPT[:CUT], finish=OUTPUT_CAP[api], output_tokens=10),
        Reply(text=_rest_of_script, output_tokens=20),
    ]
    setattr(standin, api, replies)
    usage: dict[tuple[str, str], UsageTotal] = {}
    switches = _switches()
    provider = sdk_providers[API[api]]
    chunks = await collect(make_router(), [provider], usage, switches)
    assert "".join(chunks) == SCRIPT
    first, second = standin.of(api)
    assert _partial(first.body) == "" and _partial(second.body) == SCRIPT[:CUT]
    assert switches == []
    assert usage[(provider.name, provider.model)].output_tokens == 30


async def test_continuations_at_the_output_cap_are_bounded(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    # Each call writes a line more, and is cut at the cap again.
    standin.openai = [
        Reply(text=lambda body: f"INT. LOOP {len(_partial(body))} - NIGHT\n", finish="length")
    ]
    metrics = CoreMetrics()
    chunks = await collect(make_router(metrics=metrics), [sdk_providers[0]])
    assert len(standin.of("openai")) == MAX_CONTINUATIONS + 1
    assert "".join(chunks) == "".join(f"INT. LOOP {offset} - NIGHT\n" for offset in (0, 20, 41, 62))
    # The text that still ended at the cap is counted, not only logged.
    cut = metrics.registry.get_sample_value(
        "scriptgen_provider_texts_cut_total", {"provider": "openai", "stage": "write"}
    )
    assert cut == 1


@pytest.mark.parametrize(
    ("api", "refusal"),
    [
        ("openai", Reply(text=SCRIPT[:CUT], finish="content_filter")),
        ("openai", Reply(text=SCRIPT[:CUT], refusal="I can't help with that.")),
        ("anthropic", Reply(text=SCRIPT[:CUT], finish="refusal")),
    ],
    ids=["openai-content-filter", "openai-refusal", "anthropic-refusal"],
)
async def test_a_refusal_moves_to_the_next_provider_without_charging_the_breaker(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], api: str, refusal: Reply
) -> None:
    other = "anthropic" if api == "openai" else "openai"
    setattr(standin, api, [refusal])
    setattr(standin, other, [Reply(text=_rest_of_script)])
    chain = [sdk_providers[API[api]], sdk_providers[API[other]]]
    router = make_router(max_attempts=3, breaker_failures=1)
    switches = _switches()
    assert "".join(await collect(router, chain, switches=switches)) == SCRIPT
    assert switches == [(api, other, "refused", CUT)]
    assert _partial(standin.of(other)[0].body).rstrip() == SCRIPT[:CUT].rstrip()
    assert router.breakers[api].state == BreakerState.CLOSED


async def test_a_refusal_before_any_text_is_not_retried_on_the_same_provider(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.anthropic = [Reply(text="", finish="refusal")]
    standin.openai = [Reply(text=SCRIPT)]
    sleeps = Sleeps()
    router = make_router(sleeps, max_attempts=3)
    chain = [sdk_providers[1], sdk_providers[0]]
    assert "".join(await collect(router, chain)) == SCRIPT
    assert [r.api for r in standin.requests] == ["anthropic", "openai"]
    assert sleeps.delays == []


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_body_that_ends_without_its_end_marker_is_continued_elsewhere(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], api: str
) -> None:
    other = "anthropic" if api == "openai" else "openai"
    setattr(standin, api, [Reply(text=SCRIPT, end_after=CUT)])
    setattr(standin, other, [Reply(text=_rest_of_script)])
    chain = [sdk_providers[API[api]], sdk_providers[API[other]]]
    switches = _switches()
    assert "".join(await collect(make_router(), chain, switches=switches)) == SCRIPT
    assert switches == [(api, other, "connection", CUT)]


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_stream_whose_stop_reason_came_is_complete_without_its_end_marker(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], api: str
) -> None:
    setattr(standin, api, [Reply(text=SCRIPT, end_marker=False)])
    provider = sdk_providers[API[api]]
    assert "".join(await collect(make_router(), [provider])) == SCRIPT
    assert len(standin.requests) == 1


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_connection_kept_open_after_the_end_marker_does_not_hold_the_call(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], api: str
) -> None:
    setattr(standin, api, [Reply(text=SCRIPT, linger_seconds=30)])
    router = make_router(idle_timeout_seconds=5.0)
    started = time.monotonic()
    assert "".join(await collect(router, [sdk_providers[API[api]]])) == SCRIPT
    assert time.monotonic() - started < 3.0
    request = standin.of(api)[0]
    await asyncio.wait_for(request.ended.wait(), 5)
    assert request.client_closed and not request.finished


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", "overloaded"),
        ("rate_limit_error", "rate_limited"),
        ("invalid_request_error", "bad_request"),
        ("authentication_error", "auth"),
        ("permission_error", "auth"),
        ("api_error", "server_error"),
    ],
)
async def test_an_anthropic_error_event_is_classified_by_its_type(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], error_type: str, kind: str
) -> None:
    standin.anthropic = [Reply(text=SCRIPT, error_after=0, error_type=error_type)]
    standin.openai = [Reply(text=SCRIPT)]
    switches = _switches()
    router = make_router(max_attempts=1)
    chain = [sdk_providers[1], sdk_providers[0]]
    assert "".join(await collect(router, chain, switches=switches)) == SCRIPT
    assert switches == [("anthropic", "openai", kind, 0)]


async def test_an_overloaded_event_is_retried_on_the_same_provider(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.anthropic = [Reply(error_after=0, error_type="overloaded_error"), Reply(text=SCRIPT)]
    router = make_router(max_attempts=2)
    assert "".join(await collect(router, [sdk_providers[1]])) == SCRIPT
    assert len(standin.of("anthropic")) == 2


async def test_an_anthropic_read_timeout_is_a_timeout(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=standin.url,
        api_key="test",
        max_retries=0,
        timeout=httpx2.Timeout(5.0, read=0.3),
        http_client=anthropic.DefaultAioHttpClient(transport=AiohttpTransport()),
    )
    # The first chunk, then silence: the SDK's read timeout ends the stream, not the router's.
    standin.anthropic = [Reply(text=SCRIPT, chunk_chars=CUT, chunk_delay=5.0)]
    standin.openai = [Reply(text=_rest_of_script)]
    switches = _switches()
    chain: list[Provider] = [AnthropicMessagesProvider(client, "claude-test"), sdk_providers[0]]
    try:
        chunks = await collect(make_router(), chain, switches=switches)
    finally:
        await client.close()
    assert "".join(chunks) == SCRIPT
    assert switches == [("anthropic", "openai", "timeout", CUT)]


async def test_a_retry_after_beyond_the_longest_backoff_moves_on_at_once(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(status=429, retry_after="60")]
    standin.anthropic = [Reply(text=SCRIPT)]
    sleeps = Sleeps()
    switches = _switches()
    router = make_router(sleeps, max_attempts=3, max_backoff_seconds=5.0)
    assert "".join(await collect(router, list(sdk_providers), switches=switches)) == SCRIPT
    assert [r.api for r in standin.requests] == ["openai", "anthropic"]
    assert sleeps.delays == []
    assert switches == [("openai", "anthropic", "rate_limited", 0)]


async def test_a_retry_after_within_the_longest_backoff_is_waited_for(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(status=429, retry_after="4"), Reply(text=SCRIPT)]
    sleeps = Sleeps()
    router = make_router(sleeps, max_attempts=3, max_backoff_seconds=5.0)
    assert "".join(await collect(router, [sdk_providers[0]])) == SCRIPT
    assert sleeps.delays and sleeps.delays[0] >= 4.0


async def test_a_bad_request_does_not_charge_the_breaker(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(status=400)]
    standin.anthropic = [Reply(text=SCRIPT)]
    router = make_router(breaker_failures=1)
    for _ in range(2):
        assert "".join(await collect(router, list(sdk_providers))) == SCRIPT
    assert router.breakers["openai"].state == BreakerState.CLOSED
    assert len(standin.of("openai")) == 2


async def test_the_callers_deadline_does_not_charge_the_breaker(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(hang_seconds=30)]
    router = make_router(breaker_failures=1)
    with pytest.raises(DeadlineExceeded):
        await collect(router, list(sdk_providers), deadline=time.monotonic() + 0.3)
    assert router.breakers["openai"].state == BreakerState.CLOSED
    assert router.breakers["openai"].allow()


async def test_a_model_that_refuses_prefill_is_continued_with_a_user_turn(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.refuses_prefill = True
    standin.openai = [Reply(text=SCRIPT, cut_after=CUT), Reply(text=SCRIPT, cut_after=CUT)]
    standin.anthropic = [Reply(text=_rest_of_script)]
    router = make_router()
    switches = _switches()
    for _ in range(2):
        assert "".join(await collect(router, list(sdk_providers), switches=switches)) == SCRIPT
    refused, continued, again = standin.of("anthropic")
    assert refused.body["messages"][-1] == {"role": "assistant", "content": SCRIPT[:CUT]}
    for request in (continued, again):  # the second call is sent so at once
        assert request.body["messages"][-2:] == [
            {"role": "assistant", "content": SCRIPT[:CUT]},
            {"role": "user", "content": CONTINUE_INSTRUCTION},
        ]
    assert switches == [("openai", "anthropic", "connection", CUT)] * 2
    assert router.breakers["anthropic"].state == BreakerState.CLOSED


async def test_a_cut_anthropic_stream_counts_the_text_that_came(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.anthropic = [Reply(text=SCRIPT, cut_after=CUT)]
    standin.openai = [Reply(text=_rest_of_script, output_tokens=20)]
    usage: dict[tuple[str, str], UsageTotal] = {}
    chain = [sdk_providers[1], sdk_providers[0]]
    assert "".join(await collect(make_router(), chain, usage)) == SCRIPT
    counted = usage[("anthropic", "claude-test")]
    # message_start reported 1 output token; the cut stream had sent far more.
    assert counted.output_tokens == token_count(SCRIPT[:CUT]) > 1
    assert counted.input_tokens == 11  # as reported


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_connection_cut_after_the_stop_reason_ends_a_complete_text(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], api: str
) -> None:
    # The stop reason (and OpenAI's usage chunk) came, then a reset before the end marker.
    setattr(standin, api, [Reply(text=SCRIPT, output_tokens=23, end_marker=False, cut_at_end=True)])
    provider = sdk_providers[API[api]]
    usage: dict[tuple[str, str], UsageTotal] = {}
    switches = _switches()
    assert "".join(await collect(make_router(), [provider], usage, switches)) == SCRIPT
    assert len(standin.requests) == 1 and switches == []
    assert usage[(provider.name, provider.model)].output_tokens == 23  # as reported


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_connection_kept_open_without_an_end_marker_after_the_stop_reason_ends_soon(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], api: str
) -> None:
    setattr(standin, api, [Reply(text=SCRIPT, end_marker=False, linger_seconds=30)])
    router = make_router(idle_timeout_seconds=5.0)
    started = time.monotonic()
    assert "".join(await collect(router, [sdk_providers[API[api]]])) == SCRIPT
    assert time.monotonic() - started < 3.0  # the rest of the body's bound, not the idle time
    assert len(standin.requests) == 1


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_the_deadline_passing_while_the_rest_of_a_complete_body_is_read_is_no_failure(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], api: str
) -> None:
    # The whole text and its stop reason come at once; the body then stays open past the
    # deadline, which passes while the provider reads the rest of it.
    setattr(standin, api, [Reply(text=SCRIPT, chunk_chars=len(SCRIPT), linger_seconds=30)])
    router = make_router(breaker_failures=1)
    deadline = time.monotonic() + 0.8
    chunks = await collect(router, [sdk_providers[API[api]]], deadline=deadline)
    assert "".join(chunks) == SCRIPT
    assert router.breakers[api].state == BreakerState.CLOSED


#: A line said three times, cut after its second: the continuation's start repeats the end
#: of the text so far, as the text means it to.
REPEATS = "INT. KITCHEN - NIGHT\n\nMAYA\nNo. No. No.\n\nJONAH\nYes.\n"
REPEATS_CUT = REPEATS.index("No. No.") + len("No. No.")


async def test_a_prefill_continuation_is_not_trimmed_of_a_repeat_at_the_seam(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(text=REPEATS, chunk_chars=1, cut_after=REPEATS_CUT)]
    # The prefill: the model writes on from the partial's last character.
    standin.anthropic = [Reply(text=lambda body: REPEATS[len(_partial(body)) :])]
    switches = _switches()
    assert "".join(await collect(make_router(), list(sdk_providers), switches=switches)) == REPEATS
    assert _partial(standin.of("anthropic")[0].body) == REPEATS[:REPEATS_CUT]
    assert switches == [("openai", "anthropic", "connection", REPEATS_CUT)]


async def test_a_continuation_asked_for_with_a_user_turn_is_still_trimmed(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(text=SCRIPT, cut_after=CUT)]
    # Asked to "continue" (no prefill), the model restarts the line it was cut in.
    standin.anthropic = [
        Reply(text=lambda body: SCRIPT[_partial(body).rfind("\n") + 1 :]),
    ]
    standin.refuses_prefill = True
    assert "".join(await collect(make_router(), list(sdk_providers))) == SCRIPT


@pytest.mark.parametrize(
    "error",
    [
        {"type": "invalid_request_error", "message": "prefill must not end with whitespace"},
        {"type": "api_error", "message": "assistant message prefill is not supported here"},
    ],
    ids=["another-invalid-request", "not-an-invalid-request"],
)
async def test_another_400_of_a_prefill_leaves_prefill_on(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], error: dict[str, str]
) -> None:
    standin.openai = [Reply(text=SCRIPT, cut_after=CUT)]
    standin.anthropic = [Reply(status=400, error_body={"type": "error", "error": error})]
    anthropic_provider = sdk_providers[1]
    assert isinstance(anthropic_provider, AnthropicMessagesProvider)
    with pytest.raises(Unavailable):
        await collect(make_router(), list(sdk_providers))
    (request,) = standin.of("anthropic")  # not sent again without the prefill
    assert _partial(request.body) == SCRIPT[:CUT]
    assert anthropic_provider.prefills
