"""Provider workers: model calls in their own processes give what the core's own calls give.

Real worker processes (`server.providers.worker_process`), the real `openai` and
`anthropic` SDKs in them, the LLM stand-in over real HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from scriptgen.v1 import generation_pb2, project_pb2

from server import Core
from server.config import (
    RouterConfig,
    SyntheticConfig,
    add_arguments,
    build_providers,
    from_arguments,
)
from server.errors import Unavailable
from server.metrics import CoreMetrics
from server.providers import worker_pool
from server.providers.base import (
    STOP_END,
    STOP_OUTPUT_LIMIT,
    Brief,
    Prompt,
    Provider,
    TokenUsage,
)
from server.providers.body_pacing import paced_reads
from server.providers.breaker import BreakerState
from server.providers.errors import ProviderFailure
from server.providers.factory import StageProviders
from server.providers.factory import build_providers as build_stage_providers
from server.providers.router import WORKER_LOSSES_PER_CALL, ProviderRouter
from server.providers.worker_pool import (
    STARTUP_SECONDS,
    OffloadedProvider,
    ProviderWorkers,
    _Link,
)
from tests.conftest import fast_core_config
from tests.gateway.conftest import eventually, sample
from tests.standins.llm_standin import LlmStandin, Reply

TEXT = "".join(f"word{index:03d} " for index in range(80))
PROMPT = Prompt(
    generation_pb2.STAGE_WRITE,
    "You write screenplays.",
    "Write the pilot.",
    Brief(project_pb2.Project(title="Offload"), "Pilot", "A quiet start", 1),
)


class Window:
    """A paced stage, as the write stage's coalescer makes one (only its presence counts)."""

    def resume_at(self) -> float | None:
        return None


@contextlib.asynccontextmanager
async def _stages(standin: LlmStandin, router: RouterConfig) -> AsyncIterator[StageProviders]:
    """OpenAI on the plan stage and Anthropic on the write stage, both in one worker."""
    config = build_providers(
        plan_chain="openai",
        write_chain="anthropic",
        openai_api_key="test",
        openai_base_url=f"{standin.url}/v1",
        openai_model="gpt-test",
        anthropic_api_key="test",
        anthropic_base_url=standin.url,
        anthropic_model="claude-test",
        router=router,
    )
    built = build_stage_providers(config, SyntheticConfig(), workers=1, window_seconds=0.05)
    await built.start()
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
async def stages(standin: LlmStandin) -> AsyncIterator[StageProviders]:
    async with _stages(standin, RouterConfig(max_attempts=1)) as built:
        yield built


def _both(stages: StageProviders) -> list[Provider]:
    return [stages.plan[0], stages.write[0]]


async def _read(provider: Provider, usage: TokenUsage, *, paced: bool) -> list[str]:
    with paced_reads(Window() if paced else None):
        return [chunk async for chunk in provider.stream(PROMPT, usage)]


@pytest.mark.parametrize("paced", [False, True], ids=["as-read", "by-window"])
async def test_text_usage_and_request_are_those_of_the_provider(
    stages: StageProviders, standin: LlmStandin, paced: bool
) -> None:
    standin.openai[:] = [Reply(text=TEXT, chunk_chars=7, chunk_delay=0.002, output_tokens=77)]
    standin.anthropic[:] = [Reply(text=TEXT, chunk_chars=5, chunk_delay=0.002, output_tokens=55)]
    for provider, api, tokens in zip(_both(stages), ("openai", "anthropic"), (77, 55), strict=True):
        assert isinstance(provider, OffloadedProvider)
        usage = TokenUsage()
        pieces = await _read(provider, usage, paced=paced)
        assert "".join(pieces) == TEXT
        assert (usage.input_tokens, usage.output_tokens, usage.reported) == (11, tokens, True)
        record = standin.of(api)[-1]
        assert record.finished and not record.client_closed
        assert "Write the pilot." in str(record.body["messages"])
        if paced:
            # ~1.2 s of text cut by a 50 ms window: far fewer pieces than the stand-in's chunks.
            assert len(pieces) < len(TEXT) // 10
    assert stages.workers is not None and len(stages.workers.pids()) == 1


async def test_closing_the_stream_closes_the_model_request(
    stages: StageProviders, standin: LlmStandin
) -> None:
    standin.anthropic[:] = [Reply(text=TEXT * 10, chunk_chars=4, chunk_delay=0.02)]
    stream = stages.write[0].stream(PROMPT, TokenUsage())
    first = await anext(stream)
    assert TEXT.startswith(first)
    await stream.aclose()  # type: ignore[attr-defined]
    record = standin.of("anthropic")[-1]
    await eventually(lambda: record.client_closed, "the request closed", 10)
    assert not record.finished


@pytest.mark.parametrize("paced", [False, True], ids=["as-read", "by-window"])
async def test_how_the_text_ended_comes_back_from_the_worker(
    stages: StageProviders, standin: LlmStandin, paced: bool
) -> None:
    standin.openai[:] = [Reply(text=TEXT, finish="length")]
    standin.anthropic[:] = [Reply(text=TEXT)]
    stops = []
    for provider in _both(stages):
        usage = TokenUsage()
        assert "".join(await _read(provider, usage, paced=paced)) == TEXT
        stops.append(usage.stop)
    assert stops == [STOP_OUTPUT_LIMIT, STOP_END]


@pytest.mark.parametrize("paced", [False, True], ids=["as-read", "by-window"])
async def test_an_exact_continuation_is_said_by_the_worker_before_its_text(
    stages: StageProviders, standin: LlmStandin, paced: bool
) -> None:
    # Anthropic continues with a prefill (exact), OpenAI with a user turn (not exact).
    standin.openai[:] = [Reply(text=TEXT)]
    standin.anthropic[:] = [Reply(text=TEXT)]
    partial = replace(PROMPT, partial="INT. HALL - DAY\n\nMAYA\nNo.")
    exact = []
    for provider in _both(stages):
        usage = TokenUsage()
        with paced_reads(Window() if paced else None):
            stream = provider.stream(partial, usage)
            await anext(stream)
            exact.append(usage.exact_continuation)  # known by the first text
            await stream.aclose()  # type: ignore[attr-defined]
    assert exact == [False, True]


@pytest.mark.parametrize(
    ("reply", "kind", "retry_after"),
    [
        (Reply(status=429, retry_after="3"), "rate_limited", 3.0),
        (Reply(status=401), "auth", None),
        (Reply(status=503), "server_error", None),
        (Reply(text=TEXT, malformed_after=20), "malformed", None),
        (Reply(text=TEXT, cut_after=20), "connection", None),
        (Reply(text=TEXT, finish="content_filter"), "refused", None),
    ],
    ids=["429", "401", "503", "malformed", "cut", "content-filter"],
)
async def test_failures_keep_their_kind_and_retry_after(
    stages: StageProviders, standin: LlmStandin, reply: Reply, kind: str, retry_after: float | None
) -> None:
    standin.openai[:] = [reply]
    with pytest.raises(ProviderFailure) as caught:
        await _read(stages.plan[0], TokenUsage(), paced=False)
    assert (caught.value.provider, caught.value.kind) == ("openai", kind)
    assert caught.value.retry_after == retry_after


async def test_a_worker_that_dies_fails_its_calls_and_the_next_call_waits_for_its_successor(
    stages: StageProviders, standin: LlmStandin
) -> None:
    workers = stages.workers
    assert workers is not None
    standin.openai[:] = [Reply(hang_seconds=60)]
    hanging = asyncio.ensure_future(_read(stages.plan[0], TokenUsage(), paced=False))
    await eventually(lambda: len(standin.of("openai")) == 1, "the request", 10)
    (pid,) = workers.pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ProviderFailure) as caught:
        await asyncio.wait_for(hanging, 10)
    assert (caught.value.provider, caught.value.kind) == ("openai", "worker_lost")
    assert caught.value.retryable
    # Made while no worker serves (the next one pauses, then imports the SDK): it waits.
    assert workers.live == 0
    standin.openai[:] = [Reply(text=TEXT)]
    assert "".join(await _read(stages.plan[0], TokenUsage(), paced=False)) == TEXT
    assert workers.restarted == 1 and workers.live == 1
    assert workers.pids() != [pid]


async def test_a_worker_lost_mid_call_costs_the_stream_nothing(
    stages: StageProviders, standin: LlmStandin
) -> None:
    """The router calls the same provider again from the delivered text, which the next
    worker's call continues (restarting a little before the cut, trimmed), and the
    provider's breaker is not charged: the text is the model's, whole and once."""

    def continuation(body: dict[str, object]) -> str:
        messages = body["messages"]
        assert isinstance(messages, list)
        # The delivered text as the assistant's, then the instruction to go on.
        partial = str(messages[-2]["content"])
        assert messages[-2]["role"] == "assistant" and TEXT.startswith(partial)
        return TEXT[len(partial) - 10 :]

    standin.openai[:] = [
        Reply(text=TEXT, chunk_chars=6, chunk_delay=0.03),
        Reply(text=continuation, chunk_chars=6),
    ]
    workers = stages.workers
    assert workers is not None
    metrics = CoreMetrics()
    router = ProviderRouter(["openai"], RouterConfig(max_attempts=1), metrics)
    delivered: list[str] = []

    async def write() -> None:
        stream = router.stream("plan", PROMPT, [stages.plan[0]], {})
        async with aclosing(stream):
            async for chunk in stream:
                delivered.append(chunk)

    writing = asyncio.ensure_future(write())
    await eventually(lambda: len("".join(delivered)) >= 60, "some text", 10)
    (pid,) = workers.pids()
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(writing, 30)
    assert "".join(delivered) == TEXT
    assert len(standin.of("openai")) == 2
    breaker = router.breakers["openai"]
    assert (breaker.state, breaker._failures) == (BreakerState.CLOSED, 0)
    requests = metrics.provider_requests.labels
    assert requests("openai", "worker_lost")._value.get() == 1
    assert requests("openai", "ok")._value.get() == 1


async def test_waiting_for_a_worker_ends_before_the_first_token_timeout_as_the_cores_failure(
    standin: LlmStandin,
) -> None:
    """A wait for the next worker longer than the router allows the first token is not the
    provider's fault: it ends as `worker_lost` (not charged) before the router's timeout."""
    router_config = RouterConfig(max_attempts=1, first_token_timeout_seconds=0.5)
    async with _stages(standin, router_config) as stages:
        workers = stages.workers
        assert workers is not None
        (pid,) = workers.pids()
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: workers.live == 0, "the worker gone", 10)
        metrics = CoreMetrics()
        router = ProviderRouter(["openai"], router_config, metrics)

        async def write() -> None:
            stream = router.stream("plan", PROMPT, [stages.plan[0]], {})
            async with aclosing(stream):
                async for _ in stream:
                    pass

        with pytest.raises(Unavailable):
            await write()
        requests = metrics.provider_requests.labels
        assert requests("openai", "worker_lost")._value.get() == WORKER_LOSSES_PER_CALL + 1
        assert requests("openai", "first_token_timeout")._value.get() == 0
        assert router.breakers["openai"]._failures == 0


async def test_a_worker_that_ran_a_while_is_started_again_at_once(
    stages: StageProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its calls wait for the next one: no pause first (one that keeps dying gets one)."""
    monkeypatch.setattr(worker_pool, "MAX_RESTART_PAUSE_SECONDS", 0.2)  # "a while"
    monkeypatch.setattr(worker_pool, "RESTART_PAUSE_SECONDS", 30.0)  # a pause would show
    workers = stages.workers
    assert workers is not None
    await asyncio.sleep(0.3)
    (pid,) = workers.pids()
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: workers.restarted == 1 and workers.live == 1, "a worker again", 20)


async def test_a_frame_the_worker_cannot_read_ends_it_and_another_starts(
    stages: StageProviders, standin: LlmStandin
) -> None:
    """A worker never goes on after a frame it could not read, and never lingers."""
    workers = stages.workers
    assert workers is not None
    (pid,) = workers.pids()
    (link,) = workers._links
    assert link.protocol.transport is not None
    link.protocol.transport.write(b'["call", 1]\n')  # a frame its handler cannot take
    await eventually(lambda: workers.restarted == 1 and workers.live == 1, "a worker again", 30)
    gone = psutil.wait_procs([psutil.Process(pid)], timeout=10)[0] if psutil.pid_exists(pid) else []
    assert not psutil.pid_exists(pid) or [p.pid for p in gone] == [pid]
    standin.openai[:] = [Reply(text=TEXT)]
    assert "".join(await _read(stages.plan[0], TokenUsage(), paced=False)) == TEXT


async def test_a_worker_given_a_config_it_cannot_use_exits_at_once(
    stages: StageProviders,
) -> None:
    """The config frame is read as the worker's loop starts: what it cannot take ends it
    then and there, and its start fails, rather than a worker left waiting."""
    workers = stages.workers
    assert workers is not None
    link = _Link(workers, 1)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="provider worker 1 could not start: AssertionError"):
        await link.start("no configuration")  # type: ignore[arg-type]
    assert time.monotonic() - started < STARTUP_SECONDS / 2
    assert link.process is not None
    await asyncio.wait_for(link.process.wait(), 10)


async def test_after_close_calls_fail_at_once_and_no_worker_is_left(
    stages: StageProviders,
) -> None:
    workers = stages.workers
    assert workers is not None
    pids = workers.pids()
    await stages.aclose()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    started = time.monotonic()
    with pytest.raises(ProviderFailure, match="no provider worker is running"):
        await _read(stages.write[0], TokenUsage(), paced=True)
    assert time.monotonic() - started < 1.0


async def test_a_close_cut_short_still_kills_a_worker_that_does_not_exit(
    stages: StageProviders,
) -> None:
    """The core's close limit at shutdown cancels the close before its own wait for the
    worker is over: a stopped worker, which never exits by itself, is killed all the same."""
    workers = stages.workers
    assert workers is not None
    (pid,) = workers.pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):  # well within the close's own STOP_SECONDS
                await stages.aclose()
        await eventually(lambda: not psutil.pid_exists(pid) or _zombie(pid), "killed", 5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_worker_does_not_outlive_its_core() -> None:
    """A core killed outright: its worker sees the socket close and exits."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from server.config import SyntheticConfig, build_providers
        from server.providers.factory import build_providers as stage_providers

        async def main():
            config = build_providers(openai_api_key="k", openai_base_url="http://127.0.0.1:9/v1")
            stages = stage_providers(config, SyntheticConfig(), workers=1)
            await stages.start()
            print(stages.workers.pids()[0], flush=True)
            await asyncio.sleep(120)

        asyncio.run(main())
        """
    )
    core = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert core.stdout is not None
        worker = int(core.stdout.readline())
        assert psutil.pid_exists(worker)
        core.kill()
        core.wait(10)
        gone = psutil.wait_procs([psutil.Process(worker)], timeout=10)[0]
        assert [p.pid for p in gone] == [worker]
    finally:
        core.kill()
        core.wait(10)
        if core.stdout is not None:
            core.stdout.close()


def test_the_synthetic_writer_alone_starts_no_worker() -> None:
    built = build_stage_providers(
        build_providers(chain="synthetic"), SyntheticConfig(), workers=2, window_seconds=0.1
    )
    assert built.workers is None


@pytest.mark.parametrize("value", ["-1", "17", "many"])
def test_provider_workers_out_of_range_is_refused_by_name(value: str) -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, {})
    if value == "many":
        with pytest.raises(argparse.ArgumentError, match="provider-workers"):
            parser.parse_args([f"--provider-workers={value}"])
        return
    with pytest.raises(ValueError, match=r"--provider-workers must be 0-16"):
        from_arguments(parser.parse_args([f"--provider-workers={value}"]))


async def test_the_core_starts_counts_and_stops_its_workers(
    tmp_path: Path, standin: LlmStandin
) -> None:
    providers = build_providers(
        chain="openai", openai_api_key="test", openai_base_url=f"{standin.url}/v1"
    )
    core = Core(replace(fast_core_config(tmp_path), providers=providers, provider_workers=2))
    await core.start()
    try:
        workers = core.providers.workers
        assert workers is not None
        assert sample(core, "scriptgen_provider_workers") == 2
        first, second = workers.pids()
        os.kill(first, signal.SIGKILL)
        await eventually(
            lambda: (
                sample(core, "scriptgen_provider_worker_restarts_total") == 1
                and sample(core, "scriptgen_provider_workers") == 2
            ),
            "the worker started again and counted",
            30,
        )
        assert second in workers.pids() and first not in workers.pids()
        running = workers.pids()
    finally:
        await core.stop(grace=0.0)
    assert not [pid for pid in running if psutil.pid_exists(pid)]


def _quick_heartbeat(
    stages: StageProviders, monkeypatch: pytest.MonkeyPatch, beat: float, wedged: float
) -> tuple[ProviderWorkers, int]:
    """The one worker's heartbeat at `beat` seconds, wedged after `wedged`; the pool and the
    worker's pid."""
    monkeypatch.setattr(worker_pool, "HEARTBEAT_SECONDS", beat)
    monkeypatch.setattr(worker_pool, "WEDGED_SECONDS", wedged)
    workers = stages.workers
    assert workers is not None
    (link,) = workers._links
    (pid,) = workers.pids()
    assert link._beat is not None
    link._beat.cancel()
    link._heartbeat()  # the next beats come at the patched pace
    return workers, pid


async def test_a_wedged_worker_is_killed_its_calls_fail_and_another_starts(
    stages: StageProviders, standin: LlmStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopped worker keeps its socket open: only the heartbeat finds it out."""
    workers, first = _quick_heartbeat(stages, monkeypatch, beat=0.1, wedged=1.0)
    await asyncio.sleep(1.5)  # a live worker answers every ping, idle or not: left alone
    assert (workers.restarted, workers.pids()) == (0, [first])
    standin.openai[:] = [Reply(hang_seconds=60)]
    hanging = asyncio.ensure_future(_read(stages.plan[0], TokenUsage(), paced=False))
    await eventually(lambda: len(standin.of("openai")) == 1, "the request", 10)
    (pid,) = workers.pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(ProviderFailure) as caught:
            await asyncio.wait_for(hanging, 10)
        assert (caught.value.provider, caught.value.kind) == ("openai", "worker_lost")
        await eventually(lambda: not psutil.pid_exists(pid) or _zombie(pid), "killed", 10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    await eventually(lambda: workers.restarted == 1 and workers.live == 1, "a worker again", 30)
    standin.openai[:] = [Reply(text=TEXT)]
    assert "".join(await _read(stages.plan[0], TokenUsage(), paced=False)) == TEXT


def _zombie(pid: int) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    return True


async def test_a_core_that_stood_still_does_not_take_its_worker_for_wedged(
    stages: StageProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core's loop blocked past WEDGED_SECONDS: the worker's pongs wait unread in the
    socket, and the late beat must not kill a worker that answered."""
    workers, first = _quick_heartbeat(stages, monkeypatch, beat=0.2, wedged=0.5)
    await asyncio.sleep(0.3)  # a ping out, its pong back
    time.sleep(1.5)  # noqa: ASYNC251  # the core stands still: a blocking call, a long GC
    await asyncio.sleep(1.0)
    assert (workers.restarted, workers.pids()) == (0, [first])
