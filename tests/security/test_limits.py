"""Fair use: requests per key, streams per tenant, daily tokens — in memory and across replicas."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self, cast

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ReadOnlyError
from scriptgen.v1 import (
    generation_service_pb2,
    generation_service_pb2_grpc,
    project_pb2,
    project_service_pb2,
    project_service_pb2_grpc,
)

from gateway import GatewayServer
from server import Core, SyntheticConfig
from server.auth import LimitDefaults
from server.auth import guard as guard_module
from server.auth.guard import Caller, Guard
from server.events import open_redis
from server.ratelimit import MemoryLimiter, RedisLimiter, TokenBudget
from server.ratelimit import budget as budget_module
from server.ratelimit.base import Limiter
from server.ratelimit.budget import BLOCK, estimate_tokens, utc_day
from server.services import calls as calls_module
from tests.gateway.conftest import gateway_config
from tests.security.conftest import bearer, make_key, secure_config
from tests.server.rpc import error_info, rich_status

PS = project_service_pb2
GS = generation_service_pb2


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter()
        return
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    connection = open_redis(url, prefix, retry_seconds=2.0)
    try:
        yield RedisLimiter(connection)
    finally:
        await connection.aclose()


async def test_the_limiter_contract(limiter: Limiter) -> None:
    decisions = [await limiter.hit("k1", 3, 60) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].retry_after_seconds > 0 and decisions[3].limit == 3
    assert (await limiter.hit("k2", 3, 60)).allowed  # another key, another bucket
    assert await limiter.open_stream("t", "s1", 2, 60)
    assert await limiter.open_stream("t", "s2", 2, 60)
    assert not await limiter.open_stream("t", "s3", 2, 60)
    await limiter.close_stream("t", "s1")
    assert await limiter.open_stream("t", "s3", 2, 60)
    assert not await limiter.open_stream("t", "s4", 2, 60)
    assert await limiter.open_stream("t", "s5", 2, 0.05) is False
    assert await limiter.reserve_tokens("t", "d", 80, 100) == 80
    assert await limiter.reserve_tokens("t", "d", 80, 100) == 20
    assert await limiter.reserve_tokens("t", "d", 1, 100) == 0
    await limiter.refund_tokens("t", "d", 30)
    assert await limiter.tokens_used("t", "d") == 70


async def test_stream_leases_lapse(limiter: Limiter) -> None:
    assert await limiter.open_stream("t", "s1", 1, 0.1)
    await asyncio.sleep(0.3)
    assert await limiter.open_stream("t", "s2", 1, 60)  # s1's core never closed it


async def test_a_budget_counts_tokens_and_stops_at_the_limit() -> None:
    budget = TokenBudget(MemoryLimiter(), "t", daily=300)
    await budget.spend(299)
    with pytest.raises(Exception, match="daily budget") as raised:
        await budget.spend(2)
    assert getattr(raised.value, "reason", "") == "TOKEN_BUDGET_EXHAUSTED"


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_rate_headers(
    tmp_path: Path,
) -> None:
    limits = LimitDefaults(requests_per_window=3, window_seconds=60, max_streams=10)
    core = Core(secure_config(tmp_path / "core", limits=limits))
    await core.start()
    try:
        key = await make_key(core, "alice")
        other = await make_key(core, "alice")
        gateway = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}"))
        await gateway.start()
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{gateway.port}",
                headers={"Authorization": f"Bearer {key}"},
            ) as http:
                answers = [await http.get("/v1/projects") for _ in range(4)]
                other_answer = await http.get(
                    "/v1/projects", headers={"Authorization": f"Bearer {other}"}
                )
                exposition = (await http.get("/metrics")).text
            gateway_rejected = sum(
                sample.value
                for family in text_string_to_metric_families(exposition)
                for sample in family.samples
                if sample.name == "scriptgen_rate_limit_rejections_total"
            )
        finally:
            await gateway.stop()
        assert gateway_rejected == 1
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        refused = answers[-1]
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["X-RateLimit-Limit"] == "3"
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert int(refused.headers["X-RateLimit-Reset"]) > 0
        assert refused.json()["error"]["details"][0]["reason"] == "RATE_LIMITED"
        assert other_answer.status_code == 200  # limits are per key
        rejected = core.metrics.registry.get_sample_value(
            "scriptgen_rate_limit_rejections_total", {"limit": "requests"}
        )
        assert rejected == 1
    finally:
        await core.stop()


async def _project(channel: aio.Channel, key: str) -> str:
    stub = project_service_pb2_grpc.ProjectServiceStub(channel)
    reply = await stub.CreateProject(
        PS.CreateProjectRequest(project=project_pb2.Project(title="T")), metadata=bearer(key)
    )
    return reply.project.name


async def test_the_rate_limit_holds_across_two_cores_on_one_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    limits = LimitDefaults(requests_per_window=10, window_seconds=60, max_streams=10)
    cores = []
    for index in range(2):
        config = secure_config(tmp_path / "shared", limits=limits)
        config = replace(config, redis_url=redis_url, redis_key_prefix=redis_prefix)
        if index:
            config = replace(config, metrics_address=None)
        core = Core(config)
        await core.start()
        cores.append(core)
    try:
        key = await make_key(cores[0], "alice")
        outcomes: list[grpc.StatusCode] = []
        channels = [aio.insecure_channel(f"127.0.0.1:{c.grpc_port}") for c in cores]
        try:
            stubs = [project_service_pb2_grpc.ProjectServiceStub(ch) for ch in channels]

            async def one(index: int) -> None:
                try:
                    await stubs[index % 2].ListProjects(
                        PS.ListProjectsRequest(), metadata=bearer(key)
                    )
                    outcomes.append(grpc.StatusCode.OK)
                except aio.AioRpcError as error:
                    retry = error_details_pb2.RetryInfo()
                    has_retry = any(d.Unpack(retry) for d in rich_status(error).details)
                    outcomes.append(error.code() if has_retry else grpc.StatusCode.UNKNOWN)

            await asyncio.gather(*(one(i) for i in range(30)))
        finally:
            for channel in channels:
                await channel.close()
        # Ten in the window across both cores, not ten each.
        assert outcomes.count(grpc.StatusCode.OK) == 10
        assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 20
    finally:
        for core in reversed(cores):
            await core.stop()


async def test_streams_per_tenant_are_limited(tmp_path: Path) -> None:
    limits = LimitDefaults(requests_per_window=1000, window_seconds=60, max_streams=1)
    core = Core(secure_config(tmp_path / "core", limits=limits))
    await core.start()
    try:
        key = await make_key(core, "alice")
        async with aio.insecure_channel(f"127.0.0.1:{core.grpc_port}") as channel:
            parent = await _project(channel, key)
            stub = generation_service_pb2_grpc.GenerationServiceStub(channel)
            first = stub.GenerateScript(
                GS.GenerateScriptRequest(parent=parent, title="One", detach=True),
                metadata=bearer(key),
            )
            opening = await first.read()
            assert isinstance(opening, GS.GenerateScriptResponse)
            follow = stub.StreamGenerationEvents(
                GS.StreamGenerationEventsRequest(name=opening.event.generation),
                metadata=bearer(key),
            )
            with pytest.raises(aio.AioRpcError) as raised:
                await follow.read()
            assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_info(raised.value).reason == "TOO_MANY_STREAMS"
            first.cancel()
            await asyncio.sleep(0.2)  # the first stream's slot is given back
            events = [
                r.event
                async for r in stub.StreamGenerationEvents(
                    GS.StreamGenerationEventsRequest(name=opening.event.generation),
                    metadata=bearer(key),
                )
            ]
            assert events[-1].WhichOneof("kind") in ("completed", "failed", "cancelled")
    finally:
        await core.stop()


async def test_a_spent_daily_budget_fails_the_stream_and_saves_nothing(tmp_path: Path) -> None:
    limits = LimitDefaults(daily_tokens=60, max_streams=10)
    core = Core(secure_config(tmp_path / "core", limits=limits))
    await core.start()
    try:
        key = await make_key(core, "alice")
        async with aio.insecure_channel(f"127.0.0.1:{core.grpc_port}") as channel:
            parent = await _project(channel, key)
            stub = generation_service_pb2_grpc.GenerationServiceStub(channel)
            events = [
                r.event
                async for r in stub.GenerateScript(
                    GS.GenerateScriptRequest(parent=parent, title="Too long"),
                    metadata=bearer(key),
                )
            ]
            projects = project_service_pb2_grpc.ProjectServiceStub(channel)
            episodes = await projects.ListEpisodes(
                PS.ListEpisodesRequest(parent=parent), metadata=bearer(key)
            )
        last = events[-1]
        assert last.HasField("failed"), last
        assert last.failed.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        info = error_details_pb2.ErrorInfo()
        assert any(d.Unpack(info) for d in last.failed.status.details)
        assert info.reason == "TOKEN_BUDGET_EXHAUSTED"
        written = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
        assert 0 < len(written) <= 60 * 4  # the deltas that fit stay in the event log
        assert list(episodes.episodes) == []  # the partial script is not saved
    finally:
        await core.stop()


@asynccontextmanager
async def _two_cores(
    folder: Path,
    redis_url: str,
    redis_prefix: str,
    limits: LimitDefaults,
    synthetic: SyntheticConfig,
) -> AsyncIterator[tuple[Core, Core]]:
    """Two cores on one database and one Redis; each text delta is one token, however busy
    the machine (no coalescing), so budgets are spent exactly."""
    cores: list[Core] = []
    try:
        for index in range(2):
            config = replace(
                secure_config(folder, limits=limits),
                redis_url=redis_url,
                redis_key_prefix=redis_prefix,
                synthetic=synthetic,
                delta_window_seconds=0.0,
            )
            if index:
                config = replace(config, metrics_address=None)
            core = Core(config)
            await core.start()
            cores.append(core)
        yield cores[0], cores[1]
    finally:
        for core in reversed(cores):
            await core.stop(grace=0)


async def test_the_stream_limit_holds_across_two_cores_on_one_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    limits = LimitDefaults(requests_per_window=1000, window_seconds=60, max_streams=1)
    # A job whose stream stays open a few seconds (each stage waits for its first token),
    # then ends by itself: no client or CancelGeneration cuts a stream short.
    slow = SyntheticConfig(first_token_seconds=2.5, tokens_per_second=0.0)
    async with (
        _two_cores(tmp_path / "shared", redis_url, redis_prefix, limits, slow) as (a, b),
        aio.insecure_channel(f"127.0.0.1:{a.grpc_port}") as channel_a,
        aio.insecure_channel(f"127.0.0.1:{b.grpc_port}") as channel_b,
    ):
        key = await make_key(a, "alice")
        parent = await _project(channel_a, key)
        on_a = generation_service_pb2_grpc.GenerationServiceStub(channel_a)
        on_b = generation_service_pb2_grpc.GenerationServiceStub(channel_b)
        first = on_a.GenerateScript(
            GS.GenerateScriptRequest(parent=parent, title="One", detach=True),
            metadata=bearer(key),
        )
        opening = await first.read()
        assert isinstance(opening, GS.GenerateScriptResponse)
        job = opening.event.generation

        # Core A holds alice's one stream: core B refuses her a second.
        follow = on_b.StreamGenerationEvents(
            GS.StreamGenerationEventsRequest(name=job), metadata=bearer(key)
        )
        with pytest.raises(aio.AioRpcError) as raised:
            await follow.read()
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(raised.value).reason == "TOO_MANY_STREAMS"

        # The job done, A's stream ends and its slot is free: B follows the job A ran.
        ended = [opening.event]
        while (response := await first.read()) is not aio.EOF:
            assert isinstance(response, GS.GenerateScriptResponse)
            ended.append(response.event)
        assert ended[-1].HasField("completed")
        followed: list[Any] = []
        async with asyncio.timeout(10):
            while not followed:
                try:
                    followed = [
                        response.event
                        async for response in on_b.StreamGenerationEvents(
                            GS.StreamGenerationEventsRequest(name=job), metadata=bearer(key)
                        )
                    ]
                except aio.AioRpcError as error:
                    # The slot is given back as A's stream winds down.
                    if error_info(error).reason != "TOO_MANY_STREAMS":
                        raise
                    await asyncio.sleep(0.05)
        assert followed == ended


async def _events(channel: aio.Channel, parent: str, key: str) -> list[Any]:
    stub = generation_service_pb2_grpc.GenerationServiceStub(channel)
    return [
        response.event
        async for response in stub.GenerateScript(
            GS.GenerateScriptRequest(parent=parent, title="Budget"), metadata=bearer(key)
        )
    ]


def _budget_failure(events: list[Any]) -> str:
    last = events[-1]
    assert last.HasField("failed"), last
    assert last.failed.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in last.failed.status.details)
    return info.reason


def _tokens(events: list[Any]) -> int:
    return sum(estimate_tokens(e.text_delta.text) for e in events if e.HasField("text_delta"))


async def test_the_daily_budget_holds_across_two_cores_on_one_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    budget = 60
    limits = LimitDefaults(daily_tokens=budget, max_streams=10)
    quick = SyntheticConfig(first_token_seconds=0.0, tokens_per_second=200.0)
    async with (
        _two_cores(tmp_path / "shared", redis_url, redis_prefix, limits, quick) as (a, b),
        aio.insecure_channel(f"127.0.0.1:{a.grpc_port}") as channel_a,
        aio.insecure_channel(f"127.0.0.1:{b.grpc_port}") as channel_b,
    ):
        key = await make_key(a, "alice")
        parent = await _project(channel_a, key)
        on_a = await _events(channel_a, parent, key)
        on_b = await _events(channel_b, parent, key)
        projects = project_service_pb2_grpc.ProjectServiceStub(channel_b)
        episodes = await projects.ListEpisodes(
            PS.ListEpisodesRequest(parent=parent), metadata=bearer(key)
        )
    # Core A spent the day's budget (but for a delta that did not fit) …
    assert _budget_failure(on_a) == "TOKEN_BUDGET_EXHAUSTED"
    assert budget - 4 <= _tokens(on_a) <= budget
    # … so the job on core B fails at once with what was left: both together fit the budget.
    assert _budget_failure(on_b) == "TOKEN_BUDGET_EXHAUSTED"
    assert _tokens(on_a) + _tokens(on_b) <= budget
    assert list(episodes.episodes) == []


async def test_a_quiet_stream_keeps_its_slot_past_its_lease(
    tmp_path: Path, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Leases of 0.6 s renewed every 0.2 s; a job that sends nothing for 2.5 s after its first
    # events (a stage waiting for its first token, no heartbeat that soon).
    monkeypatch.setattr(guard_module, "STREAM_LEASE_SECONDS", 0.6)
    monkeypatch.setattr(calls_module, "_RENEW_EVERY", 0.2)
    limits = LimitDefaults(requests_per_window=1000, window_seconds=60, max_streams=1)
    config = replace(
        secure_config(tmp_path / "core", limits=limits),
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        heartbeat_seconds=60.0,
        synthetic=SyntheticConfig(first_token_seconds=2.5, tokens_per_second=0.0),
    )
    core = Core(config)
    await core.start()
    try:
        key = await make_key(core, "alice")
        async with aio.insecure_channel(f"127.0.0.1:{core.grpc_port}") as channel:
            parent = await _project(channel, key)
            stub = generation_service_pb2_grpc.GenerationServiceStub(channel)
            quiet = stub.GenerateScript(
                GS.GenerateScriptRequest(parent=parent, title="Quiet", detach=True),
                metadata=bearer(key),
            )
            opening = await quiet.read()
            assert isinstance(opening, GS.GenerateScriptResponse)
            await asyncio.sleep(1.5)  # past the lease, and nothing sent meanwhile
            # Before: the quiet stream's slot had lapsed, and a second stream was let in.
            second = stub.StreamGenerationEvents(
                GS.StreamGenerationEventsRequest(name=opening.event.generation),
                metadata=bearer(key),
            )
            with pytest.raises(aio.AioRpcError) as raised:
                await second.read()
            quiet.cancel()
    finally:
        await core.stop(grace=0)
    assert error_info(raised.value).reason == "TOO_MANY_STREAMS"


class _DayBehind(datetime.datetime):
    """A clock a day behind: what the core's local clock says, in the test below."""

    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> Self:
        return cls.fromtimestamp(time.time() - 86400, tz)


async def test_a_budget_counts_on_redis_s_day_whatever_the_core_s_clock_says(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = open_redis(redis_url, redis_prefix, retry_seconds=2.0)
    try:
        limiter = RedisLimiter(connection)
        seconds, _ = await connection.client.time()
        today = utc_day(datetime.datetime.fromtimestamp(int(seconds), datetime.UTC))
        # This core's clock is a day behind Redis's (and the other cores').
        monkeypatch.setattr(
            budget_module,
            "datetime",
            SimpleNamespace(datetime=_DayBehind, UTC=datetime.UTC, timedelta=datetime.timedelta),
        )
        behind = SimpleNamespace(time=lambda: time.time() - 86400, monotonic=time.monotonic)
        monkeypatch.setattr(budget_module, "time", behind, raising=False)
        budget = TokenBudget(limiter, "t", daily=1000)
        await budget.spend(10)
        await budget.settle()
        # Before: counted into yesterday's key, beside today's count of the other cores.
        assert await limiter.tokens_used("t", today) == 10
    finally:
        await connection.aclose()


async def test_a_step_of_the_core_s_clock_mid_job_does_not_move_the_budget_s_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limiter = MemoryLimiter()
    today = utc_day()
    budget = TokenBudget(limiter, "t", daily=1000)
    await budget.spend(10)
    # NTP steps this core's wall clock a day ahead while the job runs.
    ahead = SimpleNamespace(time=lambda: time.time() + 86400, monotonic=time.monotonic)
    monkeypatch.setattr(budget_module, "time", ahead)
    await budget.spend(BLOCK)
    await budget.settle()
    # Before: the offset was anchored to the wall clock, so the step moved the day with it.
    assert await limiter.tokens_used("t", today) == 10 + BLOCK


class _ReadOnlyOnce:
    """A guard whose first stream renewal meets a replica mid-failover (READONLY)."""

    def __init__(self) -> None:
        self.renewals = 0

    async def renew_stream(self, caller: object, stream: str) -> None:
        self.renewals += 1
        if self.renewals == 1:
            raise ReadOnlyError("You can't write against a read only replica.")


async def test_a_stream_slot_timer_keeps_renewing_after_a_redis_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(calls_module, "_RENEW_EVERY", 0.02)
    guard = _ReadOnlyOnce()
    caller = SimpleNamespace(tenant="t")
    timer = asyncio.create_task(
        calls_module._keep_counted(cast(Guard, guard), cast(Caller, caller), "s")
    )
    try:
        await asyncio.sleep(0.2)
        # Before: the READONLY ended the timer, and the stream's slot lapsed with its lease.
        assert not timer.done()
        assert guard.renewals >= 3
    finally:
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer
