"""A load run that is stopped from outside leaves no process running.

`scriptgen loadtest` in its own process, as an operator or CI runs it, is sent
SIGINT, SIGTERM, SIGHUP or SIGKILL once it measures; every process it started must
end: after the first three before the tool exits (its temporary folder goes with
them), even when a second signal comes during the stop; after SIGKILL by the
kernel's parent-death signal, client workers included. A server or client left
behind kept its load on the box, and every later run measured less.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psutil
import pytest
from scriptgen.loadtest._lifetime import uninterrupted

from server import Core, SyntheticConfig
from tests.conftest import fast_core_config
from tests.sharing import MACHINE

pytestmark = MACHINE

#: The tool's progress line once the measured phase began: its servers serve by then.
_MEASURING = re.compile(rb"streams had a first event")
_DATA_DIR = re.compile(r"--data-dir=(\S+)")


class Run:
    """A load run in its own process and what it started, once it measures."""

    def __init__(self, tool: asyncio.subprocess.Process) -> None:
        self.tool = tool
        self.tool_process = psutil.Process(tool.pid)
        self.started: list[psutil.Process] = []

    def of_role(self, role: str) -> list[psutil.Process]:
        return [p for p in self.started if _role(p) == role]

    async def exit_status(self) -> tuple[int, bytes]:
        """The tool's exit status and the rest of its stderr (which its children, a client
        worker and multiprocessing's resource tracker, hold open until they end)."""
        assert self.tool.stderr is not None
        async with asyncio.timeout(40):
            rest = await self.tool.stderr.read()
            return await self.tool.wait(), rest


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """Runs a test starts; whatever it finds, none outlives it (killed at teardown)."""
    started: list[Run] = []
    yield started
    for run in started:
        for process in [run.tool_process, *run.started]:
            with contextlib.suppress(psutil.Error):
                process.kill()


StartRun = Callable[..., Awaitable[Run]]


@pytest.fixture
def start_run(runs: list[Run]) -> StartRun:
    """Start `scriptgen loadtest` with these flags; the run once it measures."""

    async def start(*flags: str, ignoring: tuple[signal.Signals, ...] = ()) -> Run:
        def ignore() -> None:
            for signum in ignoring:
                signal.signal(signum, signal.SIG_IGN)  # as `nohup` starts it

        tool = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scriptgen",
            "loadtest",
            "--streams=3",
            "--workers=1",
            "--duration=300",
            "--sample-interval=0.2",
            *flags,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=ignore if ignoring else None,
        )
        run = Run(tool)
        runs.append(run)
        assert tool.stderr is not None
        async with asyncio.timeout(50):
            while not _MEASURING.search(line := await tool.stderr.readline()):
                assert line, "the load tool ended before it measured"
        run.started = psutil.Process(tool.pid).children(recursive=True)
        return run

    return start


def _role(process: psutil.Process) -> str:
    """`scriptgen server` or `scriptgen gateway` (with their own workers), `client` (the
    tool's client worker), or the command of another child (multiprocessing's resource
    tracker, which ends once the tool is gone)."""
    try:
        command = process.cmdline()
    except psutil.Error:
        return "gone"
    if command[1:3] == ["-m", "scriptgen"]:
        return " ".join(command[2:4])
    if "--multiprocessing-fork" in command:
        return "client"
    return " ".join(command)


def _alive(processes: list[psutil.Process]) -> list[str]:
    return [f"{process.pid} {_role(process)}" for process in processes if _running(process)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def _gone(processes: list[psutil.Process], within: float) -> list[str]:
    await asyncio.to_thread(psutil.wait_procs, processes, timeout=within)
    return _alive(processes)


SPAWNED = ("--spawn", "--ttft=0.2", "--tokens-per-second=5")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
async def test_a_stop_signal_stops_the_servers_before_the_tool_exits(
    start_run: StartRun, signum: signal.Signals
) -> None:
    run = await start_run(*SPAWNED)
    servers = run.of_role("scriptgen server") + run.of_role("scriptgen gateway")
    [core] = run.of_role("scriptgen server")
    found = _DATA_DIR.search(" ".join(core.cmdline()))
    assert found is not None
    folder = Path(found.group(1)).parent
    assert folder.is_dir()
    run.tool.send_signal(signum)
    status, rest = await run.exit_status()
    assert status == 128 + signum, rest.decode(errors="replace")
    assert f"stopped by {signum.name}".encode() in rest
    assert b"leaked" not in rest  # the client worker's shared counters were released
    assert _alive(servers) == []
    assert not folder.exists()
    assert await _gone(run.started, within=15) == []


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGHUP])
async def test_a_second_signal_does_not_cut_the_stop_short(
    start_run: StartRun, second: signal.Signals
) -> None:
    run = await start_run(*SPAWNED)
    [gateway] = run.of_role("scriptgen gateway")
    [core] = run.of_role("scriptgen server")
    run.tool.send_signal(signal.SIGTERM)
    # The gateway is stopped first, then the core, which stops its jobs in its grace time.
    assert await _gone([gateway], within=20) == []
    assert _running(core), "the core stopped before the second signal could land mid-stop"
    run.tool.send_signal(second)
    status, rest = await run.exit_status()
    assert status == 128 + signal.SIGTERM, rest.decode(errors="replace")
    assert _alive([core]) == []


async def test_a_tool_started_under_nohup_goes_on_after_a_hang_up(start_run: StartRun) -> None:
    run = await start_run(*SPAWNED, ignoring=(signal.SIGHUP,))
    run.tool.send_signal(signal.SIGHUP)
    assert await _gone([run.tool_process], within=2.0) == [f"{run.tool.pid} scriptgen loadtest"]
    run.tool.send_signal(signal.SIGTERM)
    status, rest = await run.exit_status()
    assert status == 128 + signal.SIGTERM, rest.decode(errors="replace")


async def test_sigkill_of_the_tool_still_ends_every_server(start_run: StartRun) -> None:
    run = await start_run(*SPAWNED)
    [core] = run.of_role("scriptgen server")
    found = _DATA_DIR.search(" ".join(core.cmdline()))
    assert found is not None
    run.tool.kill()
    # Each gets SIGTERM from the kernel and stops as a server does.
    assert await _gone(run.started, within=30) == []
    status, _ = await run.exit_status()
    assert status == -signal.SIGKILL
    # Only the folder stays, which nobody was left to remove.
    await asyncio.to_thread(shutil.rmtree, Path(found.group(1)).parent)


@pytest.fixture
async def idle_core(tmp_path: Path) -> AsyncIterator[Core]:
    """A core in this process whose first tokens come after a minute: streams stay open."""
    idle = dataclasses.replace(
        fast_core_config(tmp_path), synthetic=SyntheticConfig(first_token_seconds=60.0)
    )
    core = Core(idle)
    await core.start()
    try:
        yield core
    finally:
        await core.stop()


async def test_sigkill_of_the_tool_ends_its_client_workers_against_a_running_target(
    start_run: StartRun, idle_core: Core
) -> None:
    run = await start_run(f"--target-grpc=127.0.0.1:{idle_core.grpc_port}")
    clients = run.of_role("client")
    assert clients
    run.tool.kill()
    # The core (in this process) still serves: only the parent-death signal ends them.
    assert await _gone(clients, within=10) == []
    status, _ = await run.exit_status()
    assert status == -signal.SIGKILL


async def test_client_workers_leave_a_terminals_ctrl_c_to_the_tool(
    start_run: StartRun, idle_core: Core
) -> None:
    run = await start_run(f"--target-grpc=127.0.0.1:{idle_core.grpc_port}")
    clients = run.of_role("client")
    assert clients
    for client in clients:
        client.send_signal(signal.SIGINT)  # as the terminal's Ctrl-C reaches the group
    assert await _gone(clients, within=1.0) == [f"{c.pid} client" for c in clients]
    run.tool.send_signal(signal.SIGINT)  # the tool's share of it: the run stops
    status, rest = await run.exit_status()
    assert status == 128 + signal.SIGINT, rest.decode(errors="replace")
    assert b"Traceback" not in rest
    assert _alive(clients) == []


async def test_uninterrupted_work_finishes_before_the_cancellation_is_raised() -> None:
    finished: list[str] = []

    async def stopping() -> None:
        await asyncio.sleep(0.2)
        finished.append("stopped")

    async def stopper() -> None:
        await uninterrupted(stopping())
        finished.append("after")  # never: the cancellation is raised once it is done

    task = asyncio.create_task(stopper())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()  # a second one changes nothing
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["stopped"]


async def test_uninterrupted_raises_a_cancellation_that_came_as_the_work_ended() -> None:
    release = asyncio.Event()

    async def stopping() -> str:
        await release.wait()
        return "stopped"

    async def stopper() -> str:
        return await uninterrupted(stopping())

    task = asyncio.create_task(stopper())
    await asyncio.sleep(0)  # the stopper waits on the work
    release.set()  # the work ends in the next turn...
    task.cancel()  # ...and the cancel lands in that same turn
    with pytest.raises(asyncio.CancelledError):
        await task


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


@pytest.mark.parametrize(
    ("to", "signum"),
    [("group", signal.SIGINT), ("bench", signal.SIGTERM)],
    ids=["ctrl-c-in-a-terminal", "sigterm-to-bench-alone"],
)
async def test_a_stopped_make_bench_lets_the_run_stop_its_servers_and_folder(
    tmp_path: Path, to: str, signum: signal.Signals
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    bench = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scriptgen.loadtest.bench",
        "--mode=coalesced",  # a gateway of two workers, with its metrics folder in TMPDIR
        "--runs=2",
        "--only=sse-single-stream",
        "--duration=300",
        f"--out={tmp_path / 'out'}",
        env={**os.environ, "TMPDIR": str(scratch)},
        start_new_session=True,  # a process group of its own, as a terminal's job is
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    bench_process = psutil.Process(bench.pid)
    started: set[psutil.Process] = set()
    try:
        # multiprocessing's resource tracker starts as the streams are about to begin.
        async with asyncio.timeout(90):
            while not any("resource_tracker" in _role(p) for p in started):
                await asyncio.sleep(0.2)
                started.update(_descendants(bench_process))
        await asyncio.sleep(1.0)  # its streams start
        started.update(_descendants(bench_process))
        roles = sorted(_role(p) for p in started)
        assert roles.count("scriptgen gateway") == 3, roles  # the supervisor and two workers
        assert [p.name for p in scratch.iterdir()]  # the tool's folder, the gateway's
        if to == "group":
            os.killpg(bench.pid, signum)
        else:
            bench.send_signal(signum)
        async with asyncio.timeout(70):
            output, errors = await bench.communicate()
        shown = errors.decode(errors="replace")
        assert bench.returncode == 128 + signum, shown
        assert f"bench: stopped by {signum.name}" in shown
        assert f"loadtest: stopped by {signum.name}" in shown  # the tool's own stop
        assert output.count(b"== sse-single-stream") == 1  # no further run began
        assert await _gone(list(started), within=15) == []
        assert list(scratch.iterdir()) == [], shown
    finally:
        for process in [bench_process, *started]:
            with contextlib.suppress(psutil.Error):
                process.kill()


async def test_the_spawned_servers_hear_no_signal_sent_to_the_tools_process_group(
    start_run: StartRun,
) -> None:
    run = await start_run(*SPAWNED)
    servers = run.of_role("scriptgen server") + run.of_role("scriptgen gateway")
    tool_group = os.getpgid(run.tool.pid)
    assert servers
    assert all(os.getpgid(server.pid) != tool_group for server in servers)
    # The tool's session still: a session of its own would be an autogroup of its own, and
    # change how the kernel shares the CPUs out between what a run measures.
    assert {os.getsid(server.pid) for server in servers} == {os.getsid(run.tool.pid)}
    run.tool.send_signal(signal.SIGTERM)
    status, rest = await run.exit_status()
    assert status == 128 + signal.SIGTERM, rest.decode(errors="replace")


@pytest.mark.parametrize("sigint", ["handled", "ignored"])
def test_a_measuring_script_sent_sigterm_removes_its_temporary_folder(
    tmp_path: Path, sigint: str
) -> None:
    # As `scripts/*_costs.py` do: the helper once, then a folder held by `with`. A script
    # started in the background of a shell script starts with SIGINT ignored.
    ignore = "signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if sigint == "ignored" else ""
    script = (
        "import signal, sys, tempfile, time\n"
        "from scriptgen.loadtest._lifetime import interrupt_on_sigterm\n"
        f"{ignore}"
        "interrupt_on_sigterm()\n"
        "with tempfile.TemporaryDirectory() as folder:\n"
        "    print(folder, flush=True)\n"
        "    time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as child:
        try:
            assert child.stdout is not None
            folder = Path(child.stdout.readline().decode().strip())
            assert folder.is_dir()
            child.send_signal(signal.SIGTERM)
            _, errors = child.communicate(timeout=30)
            assert child.returncode == -signal.SIGINT  # ended as by Ctrl-C, through its `with`
            assert b"KeyboardInterrupt" in errors
            assert not folder.exists()
        finally:
            child.kill()
