"""Health, reflection, /metrics and graceful shutdown of a real core."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client.parser import text_string_to_metric_families
from scriptgen.v1 import generation_service_pb2

from server import Core, SyntheticConfig, app
from server.health import LIVENESS_SERVICE
from server.jobs.backends import JobBackends
from tests.conftest import fast_core_config
from tests.server.rpc import connect, error_info, health_check, health_watch, read, reflection_info

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_has_a_status_per_service_and_for_the_server(core_target: str) -> None:
    async with aio.insecure_channel(core_target) as channel:
        check = health_check(channel)
        for service in ("", "scriptgen.v1.ProjectService", "scriptgen.v1.GenerationService"):
            response = await check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == SERVING
        with pytest.raises(aio.AioRpcError) as raised:
            await check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(core_target: str) -> None:
    async with aio.insecure_channel(core_target) as channel:

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names: set[str] = set()
        async for response in reflection_info(channel)(ask()):
            names.update(s.name for s in response.list_services_response.service)
    assert {
        "scriptgen.v1.ProjectService",
        "scriptgen.v1.GenerationService",
        "grpc.health.v1.Health",
    } <= names
    # The gateway's internal relay is no public API (server.services.relay).
    assert "scriptgen.v1.RelayService" not in names


async def test_metrics_endpoint_counts_calls_and_jobs(core: Core, core_target: str) -> None:
    async with connect(core_target) as rpc:
        project = await rpc.create_project()
        await rpc.generate(project.name)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{core.metrics_port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[("scriptgen_grpc_requests_total", (("code", "OK"), ("method", "CreateProject")))]
        == 1
    )
    assert samples[("scriptgen_jobs_total", (("outcome", "succeeded"),))] == 1
    assert samples[("scriptgen_events_total", (("kind", "completed"),))] == 1
    assert any(name == "scriptgen_time_to_first_token_seconds_count" for name, _ in samples)


async def test_shutdown_turns_not_serving_refuses_jobs_and_ends_streams_once(
    tmp_path: Path,
) -> None:
    config = replace(
        fast_core_config(tmp_path / "core"),
        synthetic=SyntheticConfig(first_token_seconds=0.0, tokens_per_second=100.0),
        shutdown_grace_seconds=0.5,
    )
    core = Core(config)
    await core.start()
    target = f"127.0.0.1:{core.grpc_port}"
    async with connect(target) as rpc:
        project = await rpc.create_project()
        watch = health_watch(rpc.channel)(health_pb2.HealthCheckRequest(service=""))
        first = await read(watch)
        assert first is not None and first.status == SERVING

        streams = [asyncio.create_task(rpc.generate(project.name, f"Ep {i}")) for i in range(5)]
        await asyncio.sleep(0.3)
        stopping = asyncio.create_task(core.stop())
        next_status = read(watch)
        update = await asyncio.wait_for(next_status, 5)
        assert update is not None and update.status == NOT_SERVING
        with pytest.raises(aio.AioRpcError) as refused:
            await rpc.generate(project.name, "Too late")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(refused.value).reason == "SHUTTING_DOWN"
        results = await asyncio.wait_for(asyncio.gather(*streams), 10)
        await asyncio.wait_for(stopping, 10)
    for events in results:
        kinds = [e.WhichOneof("kind") for e in events]
        assert sum(k in {"completed", "failed", "cancelled"} for k in kinds) == 1
        assert kinds[-1] == "cancelled"
        assert events[-1].cancelled.reason == "the server is shutting down"
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))


async def test_jobs_that_finish_within_the_grace_period_complete(tmp_path: Path) -> None:
    config = replace(
        fast_core_config(tmp_path / "core"),
        synthetic=SyntheticConfig(first_token_seconds=0.2, tokens_per_second=0.0),
        shutdown_grace_seconds=10.0,
    )
    core = Core(config)
    await core.start()
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        project = await rpc.create_project()
        stream = asyncio.create_task(rpc.generate(project.name))
        await asyncio.sleep(0.1)
        await asyncio.wait_for(core.stop(), 15)
        events = await stream
    assert events[-1].HasField("completed")


async def test_a_part_that_hangs_or_fails_to_close_does_not_keep_the_core_from_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app, "CLOSE_SECONDS", 0.3)
    caplog.set_level(logging.INFO, logger="server.app")
    core = Core(fast_core_config(tmp_path / "core"))
    await core.start()
    closed: list[str] = []
    store_close, knowledge_close = core.store.close, core.knowledge.close
    jobs_close = JobBackends.close

    async def store_hangs() -> None:
        await store_close()  # closed for real, then hangs as a database gone away would
        await asyncio.sleep(3600)

    async def knowledge_fails() -> None:
        await knowledge_close()  # closed for real (its threads end), then fails
        raise OSError("the knowledge folder is gone")

    async def jobs_closes(backends: JobBackends) -> None:
        await jobs_close(backends)
        closed.append("jobs")

    monkeypatch.setattr(core.store, "close", store_hangs)
    monkeypatch.setattr(core.knowledge, "close", knowledge_fails)
    monkeypatch.setattr(JobBackends, "close", jobs_closes)  # a frozen dataclass
    async with asyncio.timeout(5):
        await core.stop()
    assert closed == ["jobs"]  # the parts after those were closed all the same
    assert "shutdown: closing the project store took more than 0.3s; going on" in caplog.text
    assert "shutdown: closing story knowledge failed; going on" in caplog.text
    assert "the knowledge folder is gone" in caplog.text
    assert "core stopped" in caplog.text


async def test_an_empty_generation_name_is_invalid(core_target: str) -> None:
    async with connect(core_target) as rpc:
        with pytest.raises(aio.AioRpcError) as raised:
            await rpc.generations.GetGeneration(
                generation_service_pb2.GetGenerationRequest(name="")
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_taken_port_ends_the_server_process_with_one_error_line(
    core: Core, tmp_path: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scriptgen",
        "server",
        "--grpc-address",
        f"127.0.0.1:{core.grpc_port}",
        "--metrics-address",
        "off",
        "--data-dir",
        str(tmp_path / "second"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 1
    assert "cannot listen" in stderr.decode()
    assert "Traceback" not in stderr.decode()


async def test_liveness_answers_serving_while_the_core_stops_serving(core: Core) -> None:
    # A stopping core turns every service NOT_SERVING but still answers; Kubernetes'
    # liveness probe asks `scriptgen.liveness`, so a draining core is never restarted.
    async with aio.insecure_channel(f"127.0.0.1:{core.grpc_port}") as channel:
        check = health_check(channel)
        alive = health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE)
        assert (await check(alive)).status == SERVING
        await core.health.shut_down()
        overall = await check(health_pb2.HealthCheckRequest(service=""))
        assert overall.status == NOT_SERVING
        assert (await check(alive)).status == SERVING
