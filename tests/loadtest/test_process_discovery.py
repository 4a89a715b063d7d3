"""The load tool measures every process of an external target: a gateway's workers too.

`scriptgen gateway --workers 2` listens on one port from two processes (SO_REUSEPORT)
under a supervisor that only holds the port. The load tool finds both by the port, and
`--server-pid` of the supervisor brings its workers; each process is named by its role.
The first tests read roles off command lines; the others run a real core and a real
two-worker gateway.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from scriptgen.loadtest import LoadConfig, Protocol, parse_http_target, run_load
from scriptgen.loadtest._processes import (
    _loopback,
    discover_servers,
    role_of,
    server_role,
    with_children,
)

from tests.replicas.cluster import CORE_LINE, GATEWAY_LINE, SCRIPTGEN, Process, spawn

PYTHON = sys.executable


@pytest.mark.parametrize(
    ("command", "role"),
    [
        ([PYTHON, SCRIPTGEN, "server", "--grpc-address=127.0.0.1:0"], "core"),
        ([PYTHON, "-m", "scriptgen", "server"], "core"),
        ([PYTHON, SCRIPTGEN, "gateway", "--workers=2"], "gateway"),
        (
            [PYTHON, "-m", "scriptgen", "gateway", "--workers=1", "--worker-name=2"],
            "gateway worker",
        ),
        ([PYTHON, SCRIPTGEN, "gateway", "--worker-name", "1"], "gateway worker"),
        ([PYTHON, SCRIPTGEN, "serve"], "core+gateway"),
        ([PYTHON, "-m", "scriptgen.loadtest._standin", "--port=0"], "standin"),
        ([PYTHON, SCRIPTGEN, "loadtest", "--spawn"], "python3"),
        (["/usr/bin/redis-server", "127.0.0.1:6379"], "python3"),  # its process name
        ([PYTHON, "-m", "scriptgen"], "python3"),
        ([], "python3"),
    ],
)
def test_a_process_is_named_by_the_scriptgen_command_it_runs(command: list[str], role: str) -> None:
    assert role_of(command, "python3") == role


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
    assert _loopback(address) is loopback


def test_a_process_that_cannot_be_read_is_a_server() -> None:
    gone = psutil.Popen([PYTHON, "-c", "pass"])
    gone.wait()
    assert server_role(gone.pid) == "server"
    assert with_children(gone.pid) == [gone.pid]


@dataclass
class Servers:
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
    found = discover_servers(servers.port)
    assert sorted(role for _, role in found) == ["core", "gateway worker", "gateway worker"]
    assert {pid for pid, role in found if role == "gateway worker"} == workers
    assert servers.gateway.child.pid not in workers, "the supervisor holds the port unlistened"
    assert (servers.core.child.pid, "core") in found


async def test_a_named_supervisor_brings_its_workers_and_each_is_measured_once(
    servers: Servers,
) -> None:
    supervisor = servers.gateway.child.pid
    workers = _listeners(servers.port)
    assert set(with_children(supervisor)) == {supervisor, *workers}
    config = LoadConfig(
        target=parse_http_target(servers.gateway.address),
        protocol=Protocol.SSE,
        streams=2,
        duration_seconds=30.0,
        sample_interval_seconds=0.1,
        server_pids=(supervisor,),
    )
    report = await run_load(config)
    assert report.outcomes == {"completed": 2}
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
