"""How a stage call ends when no provider of its chain could finish it, and what an output cap
with nothing new in it makes the router do: the real SDKs against the stand-in.

Every provider refusing, or rejecting the request as it stands, is final
(FAILED_PRECONDITION, not retried); anything else is UNAVAILABLE with the soonest wait
a provider asked for. A misconfigured provider (404, 422) charges its breaker.
"""

from __future__ import annotations

import grpc
import pytest

from server.errors import FailedPrecondition, Unavailable
from server.providers.base import Provider
from server.providers.breaker import BreakerState
from server.providers.router import MAX_CONTINUATIONS
from tests.server.test_provider_router import SCRIPT, collect, make_router, sdk_providers
from tests.server.test_provider_stream_ends import CUT, _partial, _switches
from tests.standins.llm_standin import LlmStandin, Reply

__all__ = ["sdk_providers"]  # the fixture, used here by name


async def test_every_provider_refusing_is_final_content_refused(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(text=SCRIPT[:CUT], finish="content_filter")]
    standin.anthropic = [Reply(text="", finish="refusal")]
    with pytest.raises(FailedPrecondition) as caught:
        await collect(make_router(max_attempts=3), list(sdk_providers))
    assert caught.value.reason == "CONTENT_REFUSED"
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert [r.api for r in standin.requests] == ["openai", "anthropic"]  # each asked once


async def test_refusals_and_bad_requests_together_are_final_request_refused(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(text="", finish="content_filter")]
    standin.anthropic = [Reply(status=400)]  # e.g. a prompt too long for its context
    with pytest.raises(FailedPrecondition) as caught:
        await collect(make_router(), list(sdk_providers))
    assert caught.value.reason == "REQUEST_REFUSED"
    assert "openai: refused" in caught.value.message
    assert "anthropic: bad_request" in caught.value.message


async def test_a_refusal_and_a_provider_down_is_still_retry_later(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(text="", finish="content_filter")]
    standin.anthropic = [Reply(status=503)]
    with pytest.raises(Unavailable) as caught:
        await collect(make_router(max_attempts=1), list(sdk_providers))
    assert caught.value.reason == "PROVIDERS_UNAVAILABLE"


async def test_a_retry_after_beyond_the_longest_backoff_reaches_the_final_error(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(status=429, retry_after="60")]
    with pytest.raises(Unavailable) as caught:
        await collect(make_router(max_backoff_seconds=5.0), [sdk_providers[0]])
    assert 59.0 <= caught.value.retry_after_seconds <= 60.0


async def test_the_final_retry_delay_is_the_soonest_a_provider_asked_for(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(status=429, retry_after="60")]
    standin.anthropic = [Reply(status=429, retry_after="30")]
    with pytest.raises(Unavailable) as caught:
        await collect(make_router(max_backoff_seconds=5.0), list(sdk_providers))
    assert 29.0 <= caught.value.retry_after_seconds <= 30.0


@pytest.mark.parametrize("status", [404, 422])
async def test_a_misconfigured_provider_charges_its_breaker(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider], status: int
) -> None:
    standin.openai = [Reply(status=status)]  # no such model; a field the server does not take
    standin.anthropic = [Reply(text=SCRIPT)]
    router = make_router(breaker_failures=1)
    switches = _switches()
    assert "".join(await collect(router, list(sdk_providers), switches=switches)) == SCRIPT
    assert switches == [("openai", "anthropic", "misconfigured", 0)]
    assert router.breakers["openai"].state == BreakerState.OPEN


async def test_an_anthropic_not_found_event_is_a_misconfiguration(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.anthropic = [Reply(text=SCRIPT, error_after=0, error_type="not_found_error")]
    standin.openai = [Reply(text=SCRIPT)]
    router = make_router(breaker_failures=1)
    switches = _switches()
    chain = [sdk_providers[1], sdk_providers[0]]
    assert "".join(await collect(router, chain, switches=switches)) == SCRIPT
    assert switches == [("anthropic", "openai", "misconfigured", 0)]
    assert router.breakers["anthropic"].state == BreakerState.OPEN


async def test_an_output_cap_reached_with_no_text_moves_to_the_next_provider(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    # A reasoning model that spent its whole output cap thinking.
    standin.openai = [Reply(text="", finish="length", output_tokens=8192)]
    standin.anthropic = [Reply(text=SCRIPT)]
    router = make_router(breaker_failures=1)
    switches = _switches()
    assert "".join(await collect(router, list(sdk_providers), switches=switches)) == SCRIPT
    assert len(standin.of("openai")) == 1  # not asked again for the same nothing
    assert switches == [("openai", "anthropic", "output_exhausted", 0)]
    assert router.breakers["openai"].state == BreakerState.CLOSED


async def test_a_continuation_that_only_repeats_the_text_moves_to_the_next_provider(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    # Cut at the cap, then asked for the rest, the model writes the same start again and is
    # cut at the same place: the trim leaves nothing new.
    standin.openai = [Reply(text=SCRIPT[:CUT], finish="length")]
    standin.anthropic = [Reply(text=lambda body: SCRIPT[len(_partial(body)) :])]
    switches = _switches()
    assert "".join(await collect(make_router(), list(sdk_providers), switches=switches)) == SCRIPT
    assert len(standin.of("openai")) == 2 < MAX_CONTINUATIONS + 1
    assert switches == [("openai", "anthropic", "output_exhausted", CUT)]


async def test_no_text_within_the_output_cap_anywhere_is_final(
    standin: LlmStandin, sdk_providers: tuple[Provider, Provider]
) -> None:
    standin.openai = [Reply(text="", finish="length")]
    with pytest.raises(FailedPrecondition) as caught:
        await collect(make_router(), [sdk_providers[0]])
    assert caught.value.reason == "REQUEST_REFUSED"
    assert "output_exhausted" in caught.value.message
    assert len(standin.of("openai")) == 1
