"""The load tool measures every process of a target it did not start (loadtest._discovery).

`scriptgen gateway --workers 2` listens on one port from two processes (SO_REUSEPORT)
under a supervisor that only holds the port. The tool finds both by the port, the core
behind them, and `--server-pid` of the supervisor brings its workers; each process is named
by its role. A core's provider workers come with it, and one the core starts during the run
is measured from its start. The first tests read roles off command lines and a made-up
connection table; the last ones run a real core and a real two-worker gateway, and a real
core whose provider worker is killed mid-run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from psutil._ntuples import addr, sconn
from scriptgen.cli import run
from scriptgen.loadtest import (
    LoadConfig,
    LoadTestError,
    Protocol,
    _discovery,
    _processes,
    parse_grpc_target,
    parse_http_target,
    run_load,
    summary,
)
from scriptgen.loadtest._config import is_loopback_address
from scriptgen.loadtest._discovery import (
    MAX_CHILDREN,
    children_of,
    discover_servers,
    named_servers,
    role_of,
)
from scriptgen.loadtest._processes import ProcessSampler
from scriptgen.loadtest._standin import OpenAIStandin, Pace

from tests.replicas.cluster import CORE_LINE, GATEWAY_LINE, SCRIPTGEN, Process, spawn

PYTHON = sys.executable
#: Streams of the supervisor test: enough gateway work for its workers' CPU to show.
STREAMS = 20


@pytest.mark.parametrize(
    ("command", "name", "role"),
    [
        ([PYTHON, SCRIPTGEN, "server", "--grpc-address=127.0.0.1:0"], "python3", "core"),
        ([SCRIPTGEN, "server"], "scriptgen", "core"),
        ([PYTHON, "-m", "scriptgen", "server"], "python3", "core"),
        ([PYTHON, SCRIPTGEN, "gateway", "--workers=2"], "python3", "gateway"),
        (
            [PYTHON, "-m", "scriptgen", "gateway", "--workers=1", "--worker-name=2"],
            "python3",
            "gateway worker",
        ),
        ([PYTHON, SCRIPTGEN, "gateway", "--worker-name", "1"], "python3", "gateway worker"),
        ([PYTHON, SCRIPTGEN, "serve"], "python3", "core+gateway"),
        ([PYTHON, "-m", "scriptgen.loadtest._standin", "--port=0"], "python3", "standin"),
        (
            ["coverage", "run", "--source", "scriptgen", "-m", "scriptgen", "server"],
            "coverage",
            "core",
        ),
        ([PYTHON, SCRIPTGEN, "loadtest", "--spawn"], "python3", "python3"),
        (["/usr/bin/redis-server", "127.0.0.1:6379"], "redis-server", "redis-server"),
        ([PYTHON, "-m", "scriptgen"], "python3", "python3"),
        ([], "postgres", "postgres"),
    ],
)
def test_a_process_is_named_by_the_scriptgen_command_it_runs(
    command: list[str], name: str, role: str
) -> None:
    assert role_of(command, name) == role


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # a dual-stack socket's IPv4 peer
        ("::ffff:192.0.2.7", False),
        ("192.0.2.7", False),
        ("", False),
    ],
)
def test_a_loopback_peer_is_recognised_in_either_form(address: str, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


def _listen(pid: int | None, ip: str, port: int) -> sconn:
    return sconn(
        -1, socket.AF_INET6, socket.SOCK_STREAM, addr(ip, port), (), psutil.CONN_LISTEN, pid
    )


def _link(pid: int, local_port: int, remote_ip: str, remote_port: int) -> sconn:
    local = addr(remote_ip, local_port)
    return sconn(
        -1,
        socket.AF_INET6,
        socket.SOCK_STREAM,
        local,
        addr(remote_ip, remote_port),
        psutil.CONN_ESTABLISHED,
        pid,
    )


def test_the_listeners_at_the_targets_address_and_their_loopback_peers_are_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = [
        _listen(12, "127.0.0.1", 8080),  # worker 12, IPv4 and IPv6: listed once
        _listen(12, "::", 8080),
        _listen(11, "127.0.0.1", 8080),  # worker 11
        _listen(None, "127.0.0.1", 8080),  # another user's socket: no process to measure
        _listen(99, "::1", 8080),  # another server on the same port, at another address
        _listen(20, "::ffff:127.0.0.1", 50051),  # the core, on a dual-stack socket
        _listen(30, "127.0.0.1", 6379),  # Redis: the workers do not talk to it
        _listen(40, "0.0.0.0", 9000),  # reached by worker 11 through a remote address
        _link(11, 40001, "::ffff:127.0.0.1", 50051),
        _link(12, 40002, "127.0.0.1", 50051),  # the same core from both workers: once
        _link(11, 40003, "192.0.2.7", 9000),  # not loopback: not followed
        _link(20, 40004, "127.0.0.1", 6379),  # the core's own link: not followed (one hop)
        sconn(
            -1,
            socket.AF_INET6,
            socket.SOCK_STREAM,
            addr("127.0.0.1", 40005),
            (),
            psutil.CONN_ESTABLISHED,
            11,
        ),
    ]
    names = {11: "w", 12: "w", 20: "c", 30: "r", 40: "x", 99: "o"}
    monkeypatch.setattr(_discovery, "_connections", lambda: table)
    monkeypatch.setattr(
        _discovery, "_read", lambda pid: ([f"role-{names[pid]}"], names[pid]) if pid != 12 else None
    )
    # 12 has gone between the listing and its reading: nothing to measure.
    assert discover_servers("127.0.0.1", 8080) == [(11, "w"), (20, "c")]
    monkeypatch.setattr(_discovery, "_read", lambda pid: ([], names[pid]))
    assert discover_servers("127.0.0.1", 8080) == [(11, "w"), (12, "w"), (20, "c")]
    assert discover_servers("localhost", 8080) == [(11, "w"), (12, "w"), (99, "o"), (20, "c")]
    assert discover_servers("::1", 8080) == [(12, "w"), (99, "o"), (20, "c")]
    assert discover_servers("127.0.0.1", 8081) == []


def test_a_named_process_brings_its_children_not_this_one_and_not_its_ancestors() -> None:
    sleep = "import time; time.sleep(60)"
    script = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {sleep!r}]); {sleep}"
    parent = subprocess.Popen([PYTHON, "-c", script])
    try:
        children: list[int] = []
        for _ in range(500):
            children = [p.pid for p in psutil.Process(parent.pid).children()]
            if children:
                break
            time.sleep(0.01)
        name = psutil.Process(parent.pid).name()
        assert named_servers([parent.pid, parent.pid]) == [
            (parent.pid, name),
            (children[0], f"{name} worker"),
        ]
        assert children_of([(parent.pid, "core")]) == [(children[0], "core worker")]
        # This process and its parent are never measured, named or under a named one.
        for named in (os.getpid(), os.getppid()):
            found = {pid for pid, _ in named_servers([named])}
            assert found, "the named process's other children are"
            assert not found & {os.getpid(), os.getppid()}
    finally:
        for process in psutil.Process(parent.pid).children(recursive=True):
            process.kill()
        parent.kill()
        parent.wait()


def test_a_named_process_that_is_not_running_is_a_clear_error() -> None:
    gone = subprocess.Popen([PYTHON, "-c", "pass"])
    gone.wait()
    with pytest.raises(LoadTestError, match=rf"--server-pid {gone.pid}: no such process"):
        named_servers([gone.pid])


def test_a_named_process_with_too_many_children_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    many = [(pid, "x worker") for pid in range(10_000, 10_001 + MAX_CHILDREN)]
    monkeypatch.setattr(_discovery, "_children", lambda pid, role: many)
    with pytest.raises(LoadTestError, match=rf"more than {MAX_CHILDREN}"):
        named_servers([os.getppid()])


@dataclass
class Servers:
    """A real core and a real two-worker gateway in front of it."""

    core: Process
    gateway: Process

    @property
    def port(self) -> int:
        return int(self.gateway.address.rstrip("/").rsplit(":", 1)[1])


def _listeners(port: int) -> set[int]:
    """The processes listening on `port`."""
    return {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    core = await spawn(
        "server",
        "--grpc-address=127.0.0.1:0",
        "--auth=disabled",  # the load tool's runs are on loopback, without keys
        "--metrics-address=off",
        f"--data-dir={tmp_path / 'core'}",
        "--synthetic-first-token-seconds=0",
        "--synthetic-tokens-per-second=200",
        "--synthetic-episode-minutes=1",
        "--shutdown-grace-seconds=0.5",
        pattern=CORE_LINE,
    )
    try:
        gateway = await spawn(
            "gateway",
            "--workers=2",
            f"--core-target={core.address}",
            "--http-address=127.0.0.1:0",
            "--drain-seconds=0.5",
            pattern=GATEWAY_LINE,
        )
        try:
            found = Servers(core, gateway)
            # The supervisor prints its address once one worker listens: wait for both, and
            # for a worker to be ready, which it is once its health watch reached the core.
            async with httpx.AsyncClient(timeout=10) as http, asyncio.timeout(30):
                while True:
                    ready = await http.get(f"{gateway.address.rstrip('/')}/readyz")
                    if ready.status_code == 200 and len(_listeners(found.port)) == 2:
                        break
                    await asyncio.sleep(0.1)
            yield found
        finally:
            assert await gateway.stop() == 0, gateway.output
    finally:
        assert await core.stop() == 0, core.output


async def test_every_worker_listening_on_the_port_is_found_with_the_core(
    servers: Servers,
) -> None:
    workers = _listeners(servers.port)
    found = discover_servers("127.0.0.1", servers.port)
    assert sorted(role for _, role in found) == ["core", "gateway worker", "gateway worker"]
    assert {pid for pid, role in found if role == "gateway worker"} == workers
    assert servers.gateway.child.pid not in workers, "the supervisor holds the port unlistened"
    assert (servers.core.child.pid, "core") in found


async def test_a_named_supervisor_brings_its_workers_and_each_is_measured_once(
    servers: Servers,
) -> None:
    supervisor = servers.gateway.child.pid
    workers = _listeners(servers.port)
    config = LoadConfig(
        target=parse_http_target(servers.gateway.address),
        protocol=Protocol.SSE,
        # Enough for the workers' CPU to pass the clock ticks it is read in (10 ms): two
        # streams' work was sometimes less, and read as nothing.
        streams=STREAMS,
        duration_seconds=30.0,
        sample_interval_seconds=0.1,
        server_pids=(supervisor,),
    )
    report = await run_load(config)
    assert report.outcomes == {"completed": STREAMS}
    roles = {process.pid: process.role for process in report.processes}
    assert len(roles) == len(report.processes), "no process is listed twice"
    assert roles == {
        servers.core.child.pid: "core",
        supervisor: "gateway",
        **dict.fromkeys(workers, "gateway worker"),
    }
    during = [
        p.samples[-1].cpu_seconds - p.samples[0].cpu_seconds
        for p in report.processes
        if p.pid in workers
    ]
    assert sum(during) > 0, "the workers did the gateway's work, and it was counted"


async def test_a_cores_provider_workers_are_measured_and_one_started_mid_run_from_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(_processes, "RESCAN_SECONDS", 0.3)
    sampling = asyncio.Event()
    start = ProcessSampler.start

    def start_and_say(sampler: ProcessSampler) -> None:
        start(sampler)
        sampling.set()

    monkeypatch.setattr(ProcessSampler, "start", start_and_say)
    standin = OpenAIStandin(Pace(first_token_seconds=0.0, tokens_per_second=40.0, tokens=120))
    url = await standin.start()
    try:
        core = await spawn(
            "server",
            "--grpc-address=127.0.0.1:0",
            "--auth=disabled",
            "--metrics-address=off",
            f"--data-dir={tmp_path / 'core'}",
            "--plan-providers=synthetic",
            "--write-providers=openai",
            f"--openai-base-url={url}",
            "--provider-workers=1",
            # The calls cut by the kill are tried again once the next worker is up.
            "--provider-max-attempts=6",
            "--provider-backoff-seconds=0.5",
            "--shutdown-grace-seconds=0.5",
            pattern=CORE_LINE,
        )
        try:
            (first,) = [child.pid for child in psutil.Process(core.child.pid).children()]
            config = LoadConfig(
                target=parse_grpc_target(core.address),
                protocol=Protocol.GRPC,
                streams=2,
                duration_seconds=60.0,
                sample_interval_seconds=0.1,
            )

            async def kill_the_worker() -> None:
                await sampling.wait()
                await asyncio.sleep(0.3)
                psutil.Process(first).kill()

            killer = asyncio.create_task(kill_the_worker())
            report = await run_load(config)
            await killer
        finally:
            await core.stop()
    finally:
        await standin.stop()
    # The kill cost the jobs only a wait: their calls went on on the next worker.
    assert report.outcomes == {"completed": 2}, report.errors
    workers = [process for process in report.processes if process.role == "core worker"]
    assert [process.pid for process in workers][:1] == [first], "found with its core"
    # … and the one started in its place, named by its own command line, not its parent's.
    assert len(workers) == 2, report.processes
    replacement = workers[1]
    assert [p.started_during_run for p in workers] == [False, True]
    figures = {f["pid"]: f for f in report.process_figures()}
    assert figures[replacement.pid]["started_during_run"] is True
    assert "started_during_run" not in figures[first]
    assert f"core worker {replacement.pid} (started during the run): CPU" in summary(report)
    # Its CPU counted from its start: the ~1 s of importing the SDK before it was found is in
    # (its memory from when it was found: no growth per stream is made up).
    birth, found = replacement.samples[:2]
    assert birth.cpu_seconds == 0.0 < found.cpu_seconds
    assert 0 < birth.rss_bytes <= found.rss_bytes + 4 * 2**20, "read as it was found"
    assert found.time - birth.time >= _processes.SETTLE_SECONDS
    assert replacement.samples[-1].cpu_seconds > 0.3
    # The core's memory with its workers is what they held at one moment: the exited worker
    # and the one started in its place never ran together (each holds ~100 MiB).
    peaks = [
        figures[p.pid]["rss_peak_bytes"] for p in report.processes if p.role.startswith("core")
    ]
    together = report.to_json()["roles"]["core"]["rss_peak_bytes"]
    assert max(peaks) < together < sum(peaks) - min(peaks) / 2
    assert f"core processes together: RSS peak {together / 2**20:.1f} MiB" in summary(report)


async def test_a_server_pid_must_name_a_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        await run(["loadtest", "--target-http", "http://127.0.0.1:1", "--server-pid", "0"])
    assert exited.value.code == 2
    assert "argument --server-pid: must be at least 1" in capsys.readouterr().err
