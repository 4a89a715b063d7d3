"""How `scriptgen gateway` stops, as real processes: readiness first, repeats of the signal
ignored, and `--workers`' supervisor waiting for its workers' drains and telling how they ended.

Each gateway runs in a session of its own, so a test can signal its whole process group
as a terminal's Ctrl-C does. No core is needed: `/readyz` tells "stopping" from "not ready".
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from scriptgen.cli._workers import _stop

SCRIPTGEN = str(Path(sys.executable).with_name("scriptgen"))
#: How long each gateway keeps answering `/readyz` 503 before it closes its listener.
STOP_DELAY_SECONDS = 2.0


class Gateway:
    """A `scriptgen gateway` child, its output kept as it is read."""

    def __init__(self, child: asyncio.subprocess.Process) -> None:
        self.child = child
        self.output: list[str] = []
        self.base = ""
        self.worker_pids: list[int] = []
        self._reader: asyncio.Task[None] | None = None

    async def started(self, *, workers: bool) -> None:
        """Read up to "Press Ctrl-C" (and the workers' pids, if it has workers), then keep
        reading in the background."""
        assert self.child.stdout is not None
        async with asyncio.timeout(30):
            while True:
                raw = await self.child.stdout.readline()
                if not raw:
                    raise AssertionError(f"the gateway ended early: {self.output}")
                line = raw.decode()
                self.output.append(line)
                if match := re.search(r"^\s+HTTP\s+(\S+)", line):
                    self.base = match.group(1)
                if match := re.search(r"pids ([\d ]+)\)", line):
                    self.worker_pids = [int(pid) for pid in match.group(1).split()]
                if any("Press Ctrl-C" in seen for seen in self.output) and (
                    self.worker_pids or not workers
                ):
                    break
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.child.stdout is not None
        while raw := await self.child.stdout.readline():
            self.output.append(raw.decode())

    async def exit_status(self, within: float = 30) -> int:
        async with asyncio.timeout(within):
            status = await self.child.wait()
            if self._reader is not None:
                await self._reader
        return status

    async def readiness(self, http: httpx.AsyncClient) -> str:
        answer = await http.get(f"{self.base}readyz")
        return str(answer.json()["status"])


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    started: list[Gateway] = []
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCRIPTGEN_")}

    async def start(*flags: str) -> Gateway:
        child = await asyncio.create_subprocess_exec(
            SCRIPTGEN,
            "gateway",
            "--core-target=127.0.0.1:1",  # no core: nothing here needs one
            "--http-address=127.0.0.1:0",
            f"--stop-delay-seconds={STOP_DELAY_SECONDS}",
            "--drain-seconds=0.5",
            *flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        gateway = Gateway(child)
        started.append(gateway)
        await gateway.started(workers=any(flag.startswith("--workers") for flag in flags))
        return gateway

    yield start
    for gateway in started:
        if gateway.child.returncode is None:
            os.killpg(gateway.child.pid, signal.SIGKILL)
            await gateway.child.wait()


async def _until_stopping(gateway: Gateway, http: httpx.AsyncClient) -> None:
    async with asyncio.timeout(5):
        while True:
            if await gateway.readiness(http) == "stopping":
                return
            await asyncio.sleep(0.05)


async def test_a_second_signal_does_not_cut_the_stop_short(
    start_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    gateway = await start_gateway()
    async with httpx.AsyncClient(timeout=5) as http:
        assert await gateway.readiness(http) == "not ready"  # no core behind it
        began = time.monotonic()
        gateway.child.send_signal(signal.SIGTERM)
        await _until_stopping(gateway, http)
        gateway.child.send_signal(signal.SIGINT)  # e.g. Ctrl-C after `kill`
        await asyncio.sleep(0.3)
        assert gateway.child.returncode is None
        assert await gateway.readiness(http) == "stopping"
    assert await gateway.exit_status() == 0, gateway.output
    assert time.monotonic() - began >= STOP_DELAY_SECONDS
    assert any("SIGINT while stopping" in line for line in gateway.output), gateway.output


async def test_ctrl_c_reaching_the_supervisor_and_its_workers_lets_them_stop_cleanly(
    start_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    # A terminal's Ctrl-C signals the whole process group: each worker gets SIGINT, and
    # then the supervisor's SIGTERM too.
    gateway = await start_gateway("--workers=2")
    assert len(gateway.worker_pids) == 2
    began = time.monotonic()
    os.killpg(gateway.child.pid, signal.SIGINT)
    assert await gateway.exit_status() == 0, "".join(gateway.output)
    # Each worker waited out its stop delay instead of dying at the second signal.
    assert time.monotonic() - began >= STOP_DELAY_SECONDS
    assert not any(_alive(pid) for pid in gateway.worker_pids)


async def test_the_supervisor_exits_1_when_a_worker_is_killed_while_it_stops(
    start_gateway: Callable[..., Awaitable[Gateway]],
) -> None:
    gateway = await start_gateway("--workers=2")
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=5, limits=fresh) as http:
        gateway.child.send_signal(signal.SIGTERM)
        await _until_stopping(gateway, http)
    os.kill(gateway.worker_pids[0], signal.SIGKILL)
    assert await gateway.exit_status() == 1, gateway.output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_stopping_a_supervisor_with_no_workers_yet_is_quiet() -> None:
    # A start that failed before its first worker (no temporary folder, say) stops what it
    # has: nothing, without an error of its own hiding the start's.
    await _stop([], 1.0)
