"""A load run that is stopped from outside leaves no server running.

`scriptgen loadtest --spawn` in its own process, as an operator or CI runs it, is
sent SIGTERM or SIGKILL once its servers serve; every process it started must
end: after SIGTERM before the tool exits (and its temporary folder goes with
them), after SIGKILL by the kernel's parent-death signal. A server left behind
kept its jobs and its CPU, and every later run on the box measured less.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from tests.sharing import MACHINE

pytestmark = MACHINE

#: The tool's progress line once the measured phase began: its servers serve by then.
_MEASURING = re.compile(rb"streams had a first event")
_DATA_DIR = re.compile(r"--data-dir=(\S+)")


async def _started_run() -> tuple[asyncio.subprocess.Process, list[psutil.Process]]:
    """A spawned SSE run with a client worker, long enough to be stopped from outside,
    once it measures; with every process it started."""
    tool = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scriptgen",
        "loadtest",
        "--spawn",
        "--streams=3",
        "--workers=1",
        "--ttft=0.2",
        "--tokens-per-second=5",
        "--duration=300",
        "--sample-interval=0.2",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert tool.stderr is not None
    async with asyncio.timeout(90):
        while not _MEASURING.search(line := await tool.stderr.readline()):
            assert line, "the load tool ended before it measured"
    started = psutil.Process(tool.pid).children(recursive=True)
    assert {"scriptgen server", "scriptgen gateway"} <= {_role(p) for p in started}
    return tool, started


def _role(process: psutil.Process) -> str:
    """`scriptgen server`, `scriptgen gateway`, or the command of another child (the client
    worker and multiprocessing's resource tracker, which end once the tool is gone)."""
    command = process.cmdline()
    return " ".join(command[2:4]) if command[1:3] == ["-m", "scriptgen"] else " ".join(command)


@contextlib.asynccontextmanager
async def _cleaned(processes: list[psutil.Process]) -> AsyncIterator[None]:
    """Whatever the test finds, nothing it started outlives it."""
    try:
        yield
    finally:
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()


def _alive(processes: list[psutil.Process]) -> list[str]:
    return [f"{process.pid} {process.cmdline()}" for process in processes if _running(process)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
async def test_a_stop_signal_stops_the_servers_before_the_tool_exits(
    signum: signal.Signals,
) -> None:
    tool, started = await _started_run()
    servers = [p for p in started if _role(p).startswith("scriptgen ")]
    async with _cleaned(started):
        core = next(p for p in servers if _role(p) == "scriptgen server")
        found = _DATA_DIR.search(" ".join(core.cmdline()))
        assert found is not None
        folder = Path(found.group(1)).parent
        assert folder.is_dir()
        tool.send_signal(signum)
        assert tool.stderr is not None
        async with asyncio.timeout(60):
            rest = await tool.stderr.read()
            status = await tool.wait()
        assert status == 128 + signum, rest.decode(errors="replace")
        assert f"stopped by {signum.name}".encode() in rest
        assert b"leaked" not in rest  # the client worker's shared counters were released
        assert _alive(servers) == []
        assert not folder.exists()
        await asyncio.to_thread(psutil.wait_procs, started, timeout=15)
        assert _alive(started) == []


async def test_sigkill_of_the_tool_still_ends_every_server() -> None:
    tool, started = await _started_run()
    async with _cleaned(started):
        tool.kill()
        assert await tool.wait() == -signal.SIGKILL
        # Each gets SIGTERM from the kernel and stops as a server does.
        await asyncio.to_thread(psutil.wait_procs, started, timeout=30)
        assert _alive(started) == []
