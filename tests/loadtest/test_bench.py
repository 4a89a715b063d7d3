"""`make bench`'s scenarios and medians table."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scriptgen.cli import build_parser, serve
from scriptgen.cli.loadtest import STOP_SIGNALS
from scriptgen.loadtest import LoadConfig, ModelProvider, bench, capacity, check_bounds
from scriptgen.loadtest.bench import (
    FIGURES,
    MODES,
    SCENARIOS,
    medians,
    side_by_side,
    stop_signals,
)


def test_every_scenario_is_a_valid_spawned_run_in_every_mode() -> None:
    from scriptgen.cli import loadtest

    for name, arguments in SCENARIOS.items():
        for mode, (server_args, gateway_args) in MODES.items():
            flags = [f"--server-arg={f}" for f in server_args]
            flags += [f"--gateway-arg={f}" for f in gateway_args]
            args = build_parser({}).parse_args(["loadtest", *shlex.split(arguments), *flags])
            config = loadtest._config(args)
            assert isinstance(config, LoadConfig), name
            assert config.spawn, name
            # The mode's flags come last, after the scenario's own (e.g. episode length).
            assert config.server_args[len(config.server_args) - len(server_args) :] == (
                server_args
            ), (name, mode)
            assert config.gateway_args[len(config.gateway_args) - len(gateway_args) :] == (
                gateway_args
            ), (name, mode)
            check_bounds(config)
    assert (
        loadtest._config(
            build_parser({}).parse_args(["loadtest", *shlex.split(SCENARIOS["sse-openai-200"])])
        ).provider
        is ModelProvider.OPENAI_STANDIN
    )


def test_the_mode_flags_are_flags_the_servers_have() -> None:
    server = serve.server_parser({})
    gateway = serve.gateway_parser({})
    for server_args, gateway_args in MODES.values():
        server.parse_args(list(server_args))
        gateway.parse_args(list(gateway_args))
    assert "--delta-window-ms=0" in MODES["naive"][0]


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The load tool's command lines that `bench.main` runs, each answered with success."""
    ran: list[list[str]] = []

    class FakeTool:
        """A load run that succeeds at once."""

        def __init__(self, command: list[str], preexec_fn: object) -> None:
            # Each run is stopped with `make bench` (its parent-death signal, on Linux).
            assert (preexec_fn is not None) == sys.platform.startswith("linux")
            ran.append(command)

        def wait(self, timeout: float | None = None) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeTool)
    return ran


def test_both_modes_alternate_run_by_run_with_their_flags(
    tmp_path: Path, commands: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    status = bench.main(
        ["--runs", "2", "--out", str(tmp_path), "--only", "sse-openai-200", "--duration", "30"]
    )
    assert status == 0
    assert all("--duration=30" in c for c in commands)
    modes = [next(a for a in c if a.startswith("--json=")) for c in commands]
    assert [Path(m.removeprefix("--json=")).name for m in modes] == [
        "sse-openai-200-naive-1.json",
        "sse-openai-200-coalesced-1.json",
        "sse-openai-200-naive-2.json",
        "sse-openai-200-coalesced-2.json",
    ]
    assert "--server-arg=--delta-window-ms=0" in commands[0]
    assert "--gateway-arg=--workers=1" in commands[0]
    # The coalesced mode runs as deployed: the core's model calls in two provider workers.
    assert [a for a in commands[1] if a.startswith("--server-arg")] == [
        "--server-arg=--provider-workers=2"
    ]
    assert "--gateway-arg=--workers=2" in commands[1]
    assert "--provider" in commands[0]
    assert "coalesced/naive" in capsys.readouterr().out


def test_extra_server_and_gateway_flags_go_to_every_run_after_the_modes(
    tmp_path: Path, commands: list[list[str]]
) -> None:
    status = bench.main(
        [
            *("--runs", "1", "--out", str(tmp_path), "--only", "sse-openai-200"),
            *("--mode", "coalesced", "--server-arg=--provider-workers=1"),
            "--gateway-arg=--listen-backlog=2048",
        ]
    )
    assert status == 0
    (command,) = commands
    assert [a for a in command if a.startswith("--server-arg")] == [
        "--server-arg=--provider-workers=2",
        "--server-arg=--provider-workers=1",  # the later flag wins in argparse
    ]
    assert [a for a in command if a.startswith("--gateway-arg")] == [
        "--gateway-arg=--workers=2",
        "--gateway-arg=--listen-backlog=2048",
    ]


def test_side_by_side_shows_each_mode_and_the_ratio() -> None:
    lines = side_by_side(
        {
            "naive": {"tok/s total": (100.0, 90.0, 110.0)},
            "coalesced": {"tok/s total": (300.0, 280.0, 320.0)},
        }
    )
    assert "coalesced/naive" in lines[0]
    assert "100.0 (90.0 - 110.0)" in lines[1] and "300.0" in lines[1] and "3.00x" in lines[1]


def test_cpu_per_token_and_idle_memory_add_up_core_and_every_gateway_process() -> None:
    run: dict[str, Any] = {
        "throughput": {"tokens_delivered": 1000},
        "processes": [
            {"role": "core", "cpu_seconds": 0.1, "hold_bytes_per_stream": 20480},
            {"role": "gateway", "cpu_seconds": 0.0, "hold_bytes_per_stream": 0},
            {"role": "gateway worker", "cpu_seconds": 0.05, "hold_bytes_per_stream": 10240},
            {"role": "standin", "cpu_seconds": 9.0, "hold_bytes_per_stream": 99999},
        ],
    }
    assert FIGURES["core us CPU/token"](run) == pytest.approx(100.0)
    assert FIGURES["gateway us CPU/token"](run) == pytest.approx(50.0)
    assert FIGURES["core+gateway us CPU/token"](run) == pytest.approx(150.0)
    assert FIGURES["core+gateway KiB/idle stream"](run) == pytest.approx(30.0)
    assert FIGURES["processes started mid-run"](run) == 0.0
    run["processes"].append({"role": "core worker", "cpu_seconds": 1.0, "started_during_run": True})
    assert FIGURES["processes started mid-run"](run) == 1.0


def test_peak_memory_is_the_roles_own_and_else_the_sum_of_its_processes_peaks() -> None:
    run: dict[str, Any] = {
        "processes": [
            {"role": "core", "rss_peak_bytes": 100 * 2**20},
            {"role": "core worker", "rss_peak_bytes": 50 * 2**20},
            {"role": "core worker", "rss_peak_bytes": 60 * 2**20, "started_during_run": True},
            {"role": "gateway", "rss_peak_bytes": 30 * 2**20},
        ],
    }
    assert FIGURES["core peak RSS MiB"](run) == pytest.approx(210.0)  # an older report
    run["roles"] = {"core": {"rss_peak_bytes": 160 * 2**20}}
    assert FIGURES["core peak RSS MiB"](run) == pytest.approx(160.0)
    # A newer report without a reading of the gateway's: no figure, not the old sum.
    assert FIGURES["gateway peak RSS MiB"](run) is None


def test_medians_read_nested_figures_and_skip_missing_ones() -> None:
    runs: list[dict[str, Any]] = [
        {
            "outcomes": {"completed": 10},
            "latency_ms": {"time_to_first_event": {"count": 3, "p50": 5.0}},
        },
        {
            "outcomes": {"completed": 8},
            "latency_ms": {"time_to_first_event": {"count": 3, "p50": 7.0}},
        },
        {"outcomes": {"completed": 9}, "errors": {"http 503": 1}},
    ]
    table = medians(runs)
    assert table["completed"] == (9.0, 8.0, 10.0)
    assert table["TTFE p50 ms"] == (6.0, 5.0, 7.0)
    assert table["errors"] == (0.0, 0.0, 1.0)
    assert "core CPU s" not in table
    idle = medians([{"latency_ms": {"time_to_first_token": {"count": 0, "p50": 0.0}}}])
    assert "TTFT p50 ms" not in idle


def test_every_scenarios_server_and_gateway_flags_are_flags_the_servers_have() -> None:
    from scriptgen.cli import loadtest

    server = serve.server_parser({})
    gateway = serve.gateway_parser({})
    for name, arguments in SCENARIOS.items():
        config = loadtest._config(
            build_parser({}).parse_args(["loadtest", *shlex.split(arguments)])
        )
        assert isinstance(config, LoadConfig), name
        server.parse_args(list(config.server_args))
        gateway.parse_args(list(config.gateway_args))


class StoppedTool:
    """A load run during which a stop signal comes to the sweep: its wait is interrupted
    as the sweep's signal handler interrupts it, then the run stops as asked."""

    def __init__(self, command: list[str], preexec_fn: object) -> None:
        self.signals: list[signal.Signals] = []
        self.waits = 0
        STARTED.append(self)

    def wait(self, timeout: float | None = None) -> int:
        self.waits += 1
        if self.waits == 1:
            # What the sweep's handler raises on SIGTERM (the real signal: test_stopping.py).
            raise bench.Stopped(signal.SIGTERM)
        return 128 + self.signals[-1]

    def send_signal(self, signum: signal.Signals) -> None:
        self.signals.append(signum)

    def kill(self) -> None:  # pragma: no cover - only when the stop takes too long
        raise AssertionError("a run that stops in time is not killed")


STARTED: list[StoppedTool] = []


@pytest.mark.parametrize("sweep", ["bench", "capacity"])
def test_a_stopped_sweep_passes_the_signal_on_waits_for_the_run_and_starts_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sweep: str
) -> None:
    STARTED.clear()
    monkeypatch.setattr(subprocess, "Popen", StoppedTool)
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    if sweep == "bench":
        status = bench.main(["--runs", "2", "--out", str(tmp_path), "--only", "sse-burst-200"])
    else:
        status = capacity.main(["--levels", "100,200", "--out", str(tmp_path)])
    assert status == 128 + signal.SIGTERM
    [tool] = STARTED  # no second run
    assert tool.signals == [signal.SIGTERM]
    assert tool.waits == 2  # it was waited for after the signal
    # The sweep's handlers are gone again (a test process keeps its own).
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before


def test_a_signal_the_sweep_was_started_ignoring_stays_ignored() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
