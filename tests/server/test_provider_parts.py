"""Provider settings, overlap trimming, backoff and breaker, without the network."""

from __future__ import annotations

import argparse
import random

import pytest

from server.config import add_arguments, build_providers, from_arguments
from server.providers.breaker import BreakerState, CircuitBreaker
from server.providers.overlap import OverlapTrimmer
from server.providers.retry import Backoff


def test_no_keys_means_just_synthetic() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, {})
    config = from_arguments(parser.parse_args([])).providers
    assert config.chain == ("synthetic",)


def test_keys_and_stage_chains_come_from_the_environment() -> None:
    parser = argparse.ArgumentParser()
    environ = {
        "OPENAI_API_KEY": "k1",
        "ANTHROPIC_API_KEY": "k2",
        "SCRIPTGEN_PLAN_PROVIDERS": "openai:gpt-small",
        "SCRIPTGEN_LOCAL_BASE_URL": "http://localhost:11434/v1",
    }
    add_arguments(parser, environ)
    config = from_arguments(parser.parse_args(["--write-providers", "anthropic,local"])).providers
    assert [(r.provider, r.model) for r in config.plan.routes] == [("openai", "gpt-small")]
    assert config.write.providers == ("anthropic", "local")
    assert config.provider("openai").api_key == "k1"


@pytest.mark.parametrize(
    ("chain", "message"),
    [("gemini", "unknown provider"), ("openai", "OPENAI_API_KEY"), ("local", "LOCAL_BASE_URL")],
)
def test_a_chain_that_cannot_work_is_refused(chain: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_providers(chain=chain)


@pytest.mark.parametrize(
    ("delivered", "chunks", "expected"),
    [
        ("JONAH\nMake it", ["Make it count.\n"], " count.\n"),
        ("JONAH\nMake it", ["Ma", "ke it", " count.\n"], " count.\n"),
        ("JONAH\nMake it", [" count.\n"], " count.\n"),
        ("line one\n", ["\nNEXT SCENE"], "\nNEXT SCENE"),
        ("", ["anything"], "anything"),
        ("abc abc abc", ["abc abc"], ""),
    ],
)
def test_overlap_with_the_delivered_text_is_trimmed(
    delivered: str, chunks: list[str], expected: str
) -> None:
    trimmer = OverlapTrimmer(delivered)
    out = "".join(trimmer.feed(chunk) for chunk in chunks) + trimmer.finish()
    assert out == expected


def test_backoff_honours_retry_after_and_caps() -> None:
    backoff = Backoff(base_seconds=0.5, max_seconds=5.0)
    rng = random.Random(1)
    assert 0 <= backoff.delay(0, rng=rng) <= 0.5
    assert backoff.delay(0, retry_after=3.0, rng=rng) >= 3.0
    assert backoff.delay(10, retry_after=60.0, rng=rng) == 5.0


def test_a_half_open_breaker_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker("x", failure_threshold=1, cooldown_seconds=5, clock=lambda: now[0])
    breaker.record_failure()
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.allow() and not breaker.allow()
    breaker.record_failure()
    assert breaker.state == BreakerState.OPEN


def test_the_local_providers_own_settings_come_from_flags_and_variables() -> None:
    environ = {
        "SCRIPTGEN_LOCAL_BASE_URL": "http://127.0.0.1:11434/v1",
        "SCRIPTGEN_LOCAL_MAX_OUTPUT_TOKENS": "2048",
        "SCRIPTGEN_LOCAL_WITHOUT_USAGE": "yes",
    }
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ)
    local = from_arguments(parser.parse_args([])).providers.provider("local")
    assert (local.max_output_tokens, local.include_usage) == (2048, False)
    parser = argparse.ArgumentParser()
    add_arguments(parser, {"SCRIPTGEN_LOCAL_BASE_URL": "http://127.0.0.1:11434/v1"})
    local = from_arguments(parser.parse_args(["--local-without-usage"])).providers.provider("local")
    assert (local.max_output_tokens, local.include_usage) == (0, False)
    parser = argparse.ArgumentParser()
    add_arguments(parser, {"SCRIPTGEN_LOCAL_WITHOUT_USAGE": "sometimes"})
    with pytest.raises(ValueError, match="SCRIPTGEN_LOCAL_WITHOUT_USAGE"):
        from_arguments(parser.parse_args([]))
