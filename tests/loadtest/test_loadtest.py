"""The load tool at small scale against a real core and gateway: counts that add up, the
JSON and PNG outputs, burst/ramp/hold, the duration cap, loopback-only targets, bounds."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest
from scriptgen import Client
from scriptgen.cli import run
from scriptgen.loadtest import (
    LoadConfig,
    LoadReport,
    LoadTestError,
    ModelProvider,
    Protocol,
    check_bounds,
    count_tokens,
    parse_grpc_target,
    parse_http_target,
    run_load,
    summary,
    write_chart,
)
from scriptgen.loadtest._processes import MachineSample, ProcessSample, WatchedProcess
from scriptgen.loadtest._report import _machine_figures, _role_figures

from server import Core, SyntheticConfig
from tests.conftest import fast_core_config
from tests.sharing import MACHINE

pytestmark = MACHINE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sse_config(url: str, **overrides: object) -> LoadConfig:
    settings: dict[str, object] = {
        "target": parse_http_target(url),
        "protocol": Protocol.SSE,
        "streams": 5,
        "duration_seconds": 30.0,
        "sample_interval_seconds": 0.1,
    }
    settings.update(overrides)
    return LoadConfig(**settings)  # type: ignore[arg-type]


def grpc_config(target: str, **overrides: object) -> LoadConfig:
    settings: dict[str, object] = {
        "target": parse_grpc_target(target),
        "protocol": Protocol.GRPC,
        "streams": 5,
        "duration_seconds": 30.0,
        "sample_interval_seconds": 0.1,
    }
    settings.update(overrides)
    return LoadConfig(**settings)  # type: ignore[arg-type]


async def saved_episode_tokens(core_target: str, projects: set[str]) -> int:
    """Tokens of every saved episode's script in `projects`, read back through the SDK."""
    total = 0
    async with Client(core_target) as client:
        for project in projects:
            async for episode in client.iter_episodes(project):
                script = (await client.get_episode(episode.name)).script
                total += count_tokens(script)
    return total


def check_consistent(report: LoadReport, streams: int) -> None:
    assert report.outcomes == {"completed": streams}
    assert report.errors == {}
    assert report.tokens_delivered > 0
    assert report.completed_tokens == report.saved_episode_tokens == report.tokens_delivered
    assert report.time_to_first_event.count == streams
    assert report.time_to_first_token.count == streams
    assert report.time_to_first_event.p50 <= report.time_to_first_token.p50
    # One inter-token sample per token, but for each stream's first delta (one token here).
    assert report.inter_token_latency.count == report.tokens_delivered - streams
    assert sum(p.tokens_per_second for p in report.points) > 0


async def test_sse_burst_counts_match_saved_episodes_and_outputs_are_valid(
    core_target: str, gateway_url: str, tmp_path: Path
) -> None:
    report = await run_load(sse_config(gateway_url, projects=2))

    check_consistent(report, 5)
    assert report.time_to_headers.count == 5
    # Latencies count from the request going out; the tool's own wait before is apart.
    assert report.client_delay.count == 5
    assert report.connect.count == 5  # a connection per stream
    projects = set(report.projects)
    assert len(projects) == 2
    assert await saved_episode_tokens(core_target, projects) == report.tokens_delivered
    # The core and the gateway run in this process: the listener found is this process.
    assert [p.pid for p in report.processes] == [os.getpid()]
    assert report.processes[0].samples

    report.write_json(tmp_path / "run.json")
    document = json.loads((tmp_path / "run.json").read_text())
    assert document["run"]["mode"] == "burst"
    assert document["outcomes"] == {"completed": 5}
    assert document["consistency"]["match"] is True
    assert document["throughput"]["tokens_delivered"] == report.tokens_delivered
    assert set(document["latency_ms"]["inter_token_latency"]) >= {"p50", "p95", "p99"}
    assert document["latency_ms"]["client_delay_before_send"]["count"] == 5
    assert document["processes"][0]["cpu_seconds"] >= 0
    assert document["machine"]["cpus"] == os.cpu_count()
    box = document["machine"]["cpu_during_run"]
    # This process ran core, gateway and clients: the machine was busy, within its CPUs.
    assert 0 < box["busy_percent_mean"] <= box["busy_percent_peak"] <= 100
    assert 0 <= box["steal_percent_mean"] <= 100
    # The speed reading: an empty loop's time, in seconds, taken just before the run.
    assert document["machine"]["speed_loop_iterations"] == 10_000_000
    assert 0 < document["machine"]["speed_loop_seconds"] < 60
    assert document["machine"]["speed_loop_seconds"] == round(report.speed_loop_seconds or 0, 3)
    assert "machine speed: an empty loop of 10,000,000 turns took" in summary(report)

    write_chart(report, tmp_path / "run.png")
    assert (tmp_path / "run.png").read_bytes()[:8] == PNG_MAGIC


async def test_grpc_ramp_starts_streams_evenly(core_target: str) -> None:
    report = await run_load(grpc_config(core_target, ramp_seconds=1.0))

    check_consistent(report, 5)
    assert report.time_to_headers.count == 0  # no HTTP on the gRPC path
    assert report.client_delay.max == 0  # a call is sent as it is made
    projects = set(report.projects)
    assert await saved_episode_tokens(core_target, projects) == report.tokens_delivered
    # Five streams over one second: the open-streams line starts below five.
    assert report.points[0].open_streams < 5
    assert report.to_json()["run"]["mode"] == "ramp"


async def test_sse_through_a_client_worker_process(gateway_url: str) -> None:
    report = await run_load(sse_config(gateway_url, workers=1, streams=4))

    check_consistent(report, 4)
    assert len(report.workers) == 1
    assert report.workers[0].pid != os.getpid()
    assert report.workers[0].cpu_seconds > 0
    assert any(p.role == "client" for p in report.processes)


async def test_duration_cap_cuts_open_streams_without_errors(tmp_path: Path) -> None:
    slow = dataclasses.replace(
        fast_core_config(tmp_path), synthetic=SyntheticConfig(0.0, tokens_per_second=50.0)
    )
    core = Core(slow)
    await core.start()
    try:
        started = asyncio.get_running_loop().time()
        report = await run_load(
            grpc_config(f"127.0.0.1:{core.grpc_port}", streams=3, duration_seconds=2.0)
        )
        assert asyncio.get_running_loop().time() - started < 10
    finally:
        await core.stop()
    assert report.outcomes == {"cut": 3}
    assert report.errors == {}
    assert report.tokens_delivered > 0
    assert report.duration < 4
    per_stream = report.stream_tokens_per_second
    assert 35 < per_stream.p50 < 65  # paced at 50 tokens/s


async def test_hold_keeps_idle_streams_open_then_closes_them(tmp_path: Path) -> None:
    idle = dataclasses.replace(
        fast_core_config(tmp_path), synthetic=SyntheticConfig(first_token_seconds=20.0)
    )
    core = Core(idle)
    await core.start()
    try:
        report = await run_load(
            grpc_config(
                f"127.0.0.1:{core.grpc_port}", streams=4, hold_seconds=0.5, duration_seconds=10
            )
        )
    finally:
        await core.stop()
    assert report.hold is not None
    assert report.hold.open_streams == 4
    assert report.outcomes == {"cut": 4}
    assert report.tokens_delivered == 0
    assert report.time_to_first_event.count == 4
    assert report.duration < 5
    document = report.to_json()
    assert document["hold"]["open_streams"] == 4
    # The core runs in this process, found as the listener of its port.
    [process] = report.processes
    assert process.pid == os.getpid()
    assert list(document["hold"]["bytes_per_idle_stream"]) == [f"{process.role} {process.pid}"]


async def test_cli_spawns_its_own_core(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = await asyncio.wait_for(
        run(
            [
                "loadtest",
                "--spawn",
                "--protocol=grpc",
                "--streams=3",
                "--ttft=0",
                "--tokens-per-second=0",
                "--sample-interval=0.1",
                "--quiet",
                f"--json={tmp_path / 'run.json'}",
                f"--chart={tmp_path / 'run.png'}",
            ]
        ),
        timeout=60,
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "outcomes: completed 3" in out
    assert "(match)" in out
    document = json.loads((tmp_path / "run.json").read_text())
    assert document["run"]["spawned_servers"] is True
    assert document["run"]["synthetic_pace"]["tokens_per_second"] == 0
    assert [p["role"] for p in document["processes"]] == ["core"]
    assert document["processes"][0]["cpu_seconds"] > 0
    assert (tmp_path / "run.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1:8080", "http://example.com:8080", "http://[2001:db8::1]:8080"],
)
def test_non_loopback_http_targets_are_refused(url: str) -> None:
    with pytest.raises(LoadTestError, match="only runs against this machine"):
        parse_http_target(url)


@pytest.mark.parametrize("address", ["192.168.1.10:50051", "example.com:50051", "0.0.0.0:50051"])
def test_non_loopback_grpc_targets_are_refused(address: str) -> None:
    with pytest.raises(LoadTestError, match="only runs against this machine"):
        parse_grpc_target(address)


@pytest.mark.parametrize(
    ("text", "host"),
    [("127.0.0.1:50051", "127.0.0.1"), ("127.8.9.10:1", "127.8.9.10"), ("[::1]:50051", "::1")],
)
def test_loopback_targets_are_accepted(text: str, host: str) -> None:
    assert parse_grpc_target(text).host == host
    assert parse_http_target("http://localhost:8080").port == 8080


async def test_cli_refuses_a_remote_target(capsys: pytest.CaptureFixture[str]) -> None:
    status = await run(["loadtest", "--target-http", "http://192.0.2.7:8080"])
    assert status == 1
    assert "only runs against this machine" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"streams": 0}, "--streams"),
        ({"streams": 5001}, "--streams"),
        ({"duration_seconds": 0.0}, "--duration"),
        ({"duration_seconds": 3601.0}, "--duration"),
        ({"ramp_seconds": 30.0}, "--ramp-seconds"),
        ({"hold_seconds": 40.0}, "--hold"),
        ({"projects": 6}, "--projects"),
        ({"workers": 17}, "--workers"),
        ({"spawn": True}, "exactly one"),
        ({"target": None}, "exactly one"),
        ({"provider": ModelProvider.OPENAI_STANDIN}, "--provider goes with --spawn"),
        ({"reply_tokens": 0}, "--reply-tokens"),
    ],
)
def test_bounds_are_enforced(overrides: dict[str, object], message: str) -> None:
    config = dataclasses.replace(sse_config("http://127.0.0.1:8080"), **overrides)  # type: ignore[arg-type]
    with pytest.raises(LoadTestError, match=message):
        check_bounds(config)


async def test_cli_keeps_server_settings_for_spawned_servers_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = await run(["loadtest", "--target-grpc", "127.0.0.1:1", "--ttft", "2"])
    assert status == 1
    assert "go with --spawn" in capsys.readouterr().err


async def test_an_unreachable_target_is_a_setup_error(unused_tcp_port: int) -> None:
    with pytest.raises(LoadTestError, match="cannot reach"):
        await run_load(sse_config(f"http://127.0.0.1:{unused_tcp_port}", setup_timeout_seconds=5))


def test_machine_figures_are_shares_of_every_cpu_over_the_measured_phase() -> None:
    cpus = os.cpu_count() or 1
    samples = [
        MachineSample(time=0.0, busy_seconds=0.0, steal_seconds=0.0),
        MachineSample(time=10.0, busy_seconds=1.0 * cpus, steal_seconds=0.0),  # before start
        # Measured from 10 s to 14 s: one second all busy, then three at a quarter.
        MachineSample(time=11.0, busy_seconds=2.0 * cpus, steal_seconds=0.1 * cpus),
        MachineSample(time=14.0, busy_seconds=2.75 * cpus, steal_seconds=0.1 * cpus),
    ]
    figures = _machine_figures(samples, start=10.0, end=14.0)
    assert figures == {
        "cpus": cpus,
        "busy_percent_mean": 43.8,  # 1.75 of 4 seconds, on every CPU
        "busy_percent_peak": 100.0,
        "steal_percent_mean": 2.5,
    }
    assert _machine_figures(samples, start=20.0, end=30.0) == {}  # nothing measured then


def test_a_roles_peak_memory_is_what_its_processes_held_in_one_pass() -> None:
    def process(role: str, readings: list[tuple[int, int]]) -> WatchedProcess:
        watched = WatchedProcess(pid=len(role), role=role)
        watched.samples = [ProcessSample(float(sweep), 0.0, rss, sweep) for sweep, rss in readings]
        return watched

    processes = [
        process("core", [(0, 100), (1, 110), (2, 100), (3, 105), (4, 100)]),
        process("core worker", [(0, 50), (1, 55)]),  # exited after the second pass …
        process("core worker", [(2, 1), (3, 70), (4, 60)]),  # … and this one took its place
        process("gateway", [(0, 40), (1, 40), (2, 40), (3, 40), (4, 900)]),
        process("gateway worker", [(0, 20), (1, 30), (2, 20), (3, 20), (4, 20)]),
    ]
    # The gateway's 900 came after the measured phase (end + 1 s).
    figures = _role_figures(processes, start=0.0, end=2.5)
    assert figures == {"core": {"rss_peak_bytes": 175}, "gateway": {"rss_peak_bytes": 70}}
    assert _role_figures(processes, start=10.0, end=12.0) == {}


def test_machine_peak_counts_the_measured_phase_to_its_last_reading() -> None:
    # A short run whose busiest moment is its last 0.1 s, closer to the reading before it
    # than a rate needs: that tail joins the interval before it and is not left out.
    cpus = os.cpu_count() or 1
    samples = [
        MachineSample(time=10.0, busy_seconds=0.0, steal_seconds=0.0),
        MachineSample(time=10.25, busy_seconds=0.05 * cpus, steal_seconds=0.0),
        MachineSample(time=10.5, busy_seconds=0.10 * cpus, steal_seconds=0.0),
        MachineSample(time=10.6, busy_seconds=0.20 * cpus, steal_seconds=0.0),
    ]
    figures = _machine_figures(samples, start=10.0, end=10.6)
    assert figures["busy_percent_mean"] == 33.3  # 0.2 of 0.6 seconds
    assert figures["busy_percent_peak"] == 42.9  # 0.15 of the last 0.35 seconds
    assert figures["busy_percent_mean"] <= figures["busy_percent_peak"]
