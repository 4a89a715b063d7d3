"""Start a core (and a gateway for SSE) on free loopback ports for a self-contained run.

The servers are the real `scriptgen server` and `scriptgen gateway` commands
in their own processes, so their CPU and memory are measured apart from the
load tool's. Their environment drops every `SCRIPTGEN_*` variable and the
vendors' API keys: the run uses the synthetic writer with the pace given
here, an in-memory event log and SQLite in a temporary folder. With the
OpenAI stand-in, a third process (`_standin.py`) streams at that pace instead
and the core writes through the `openai` SDK pointed at it, with a dummy key.

They never outlive the load tool. It stops them when the run ends, fails or is
interrupted (SIGINT, SIGTERM, SIGHUP: `scriptgen loadtest`); a tool killed outright
(SIGKILL, the OOM killer) cannot, so on Linux each is started with the kernel's
parent-death signal (`PR_SET_PDEATHSIG`): SIGTERM when the tool's thread that
started it ends, and a server stops on SIGTERM. Left running, a server kept its
jobs and its CPU, and every later run on the box measured less than it should.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc.aio
from grpc_health.v1 import health_pb2

from scriptgen.loadtest._config import (
    LoadTestError,
    ModelProvider,
    Protocol,
    SyntheticPace,
    Target,
)
from scriptgen.loadtest._discovery import STANDIN_MODULE, children_of
from scriptgen.loadtest._lifetime import parent_death_signal, uninterrupted

_GRPC_LINE = re.compile(r"(?m)^\s+gRPC\s+(\S+):(\d+)")
_HTTP_LINE = re.compile(r"(?m)^\s+HTTP\s+http://(\S+):(\d+)/")
_STANDIN_LINE = re.compile(r"OpenAI stand-in http://(127\.0\.0\.1):(\d+)/v1")
#: The key the core sends the stand-in (it checks none).
_STANDIN_KEY = "sk-scriptgen-standin"
_CHUNK_FLAG = "--synthetic-tokens-per-chunk"
_AUTH_FLAG = "--auth"
_DROPPED = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
_TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True, slots=True)
class SpawnedServers:
    """The target to load and the server processes as (pid, role)."""

    target: Target
    processes: tuple[tuple[int, str], ...]
    #: Where their logs are (removed after the run).
    folder: Path


def server_command(pace: SyntheticPace, data_dir: Path, server_help: str) -> list[str]:
    """`scriptgen server` on a free port with the synthetic writer at `pace`.

    `server_help` is the server's `--help`: flags newer than the tool are used
    only when the server has them.
    """
    command = [
        sys.executable,
        "-m",
        "scriptgen",
        "server",
        "--grpc-address=127.0.0.1:0",
        "--metrics-address=off",
        f"--data-dir={data_dir}",
        f"--synthetic-first-token-seconds={pace.first_token_seconds}",
        f"--synthetic-tokens-per-second={pace.tokens_per_second}",
        # A slow first token is what a hold wants, not a provider failure to retry.
        f"--first-token-timeout-seconds={max(30.0, pace.first_token_seconds * 2 + 30)}",
        "--shutdown-grace-seconds=2",
    ]
    if re.search(rf"{_AUTH_FLAG}[\s=]", server_help):
        # The run is on loopback, which is where the core allows API keys to be off.
        command.append(f"{_AUTH_FLAG}=disabled")
    if pace.tokens_per_chunk is not None:
        if _CHUNK_FLAG not in server_help:
            raise LoadTestError(
                f"--tokens-per-chunk needs `scriptgen server {_CHUNK_FLAG}`, which this"
                " version of the server does not have"
            )
        command.append(f"{_CHUNK_FLAG}={pace.tokens_per_chunk}")
    return command


def _environment(**extra: str) -> dict[str, str]:
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SCRIPTGEN_") and name not in _DROPPED
    }
    return kept | extra


async def _server_help() -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scriptgen",
        "server",
        "--help",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_environment(),
        preexec_fn=parent_death_signal(),
    )
    output, _ = await process.communicate()
    return output.decode(errors="replace")


async def _start(
    command: list[str], log: Path, environment: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    with log.open("wb") as sink:
        return await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.DEVNULL,  # in a background group, a read of the terminal stops it
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment if environment is not None else _environment(),
            # A process group of its own: a terminal's Ctrl-C reaches the tool alone, which
            # stops each server in turn (SIGTERM) and waits for it. A server signalled with
            # the tool would begin its own stop, and the tool's SIGTERM then cut it short.
            preexec_fn=parent_death_signal(own_group=True),
        )


def standin_command(pace: SyntheticPace, reply_tokens: int) -> list[str]:
    """The OpenAI stand-in on a free port, streaming `reply_tokens` tokens at `pace`."""
    return [
        sys.executable,
        "-m",
        STANDIN_MODULE,
        "--port=0",
        f"--ttft={pace.first_token_seconds}",
        f"--tokens-per-second={pace.tokens_per_second}",
        f"--tokens={reply_tokens}",
    ]


def standin_server_args(base_url: str, pace: SyntheticPace) -> list[str]:
    """Flags that make the core write through the `openai` SDK at `base_url`.

    The plan stage stays on the synthetic writer, unpaced, so the time to first
    token is the write call's; add `--server-arg=--plan-providers=openai` to send
    the plan call (a second model call per job) to the stand-in too.
    """
    return [
        "--plan-providers=synthetic",
        "--write-providers=openai",
        f"--openai-base-url={base_url}",
        f"--first-token-timeout-seconds={max(30.0, pace.first_token_seconds * 2 + 30)}",
    ]


async def _announced(
    process: asyncio.subprocess.Process, log: Path, pattern: re.Pattern[str]
) -> tuple[str, int]:
    """The host and port a server printed once it listens."""
    while True:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        match = pattern.search(text)
        if match:
            return match.group(1), int(match.group(2))
        if process.returncode is not None:
            raise LoadTestError(
                f"{log.stem} exited with status {process.returncode}; the end of its log:\n"
                + text[-2000:]
            )
        if _TRACEBACK in text:
            # A failed start may leave the process hanging on its threads: do not wait for it.
            raise LoadTestError(f"{log.stem} failed to start; the end of its log:\n{text[-2000:]}")
        await asyncio.sleep(0.05)


def _log_tails(folder: Path) -> str:
    return "".join(
        f"\n--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}"
        for log in sorted(folder.glob("*.log"))
    )


async def _core_serving(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        # typeshed's HealthStub declares no methods: call the method by its path.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        while True:
            try:
                reply = await check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)


async def _gateway_ready(base_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{base_url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


#: How long a server may take to stop on SIGTERM: longer than a gateway gives its workers
#: (`cli/_workers.worker_stop_seconds`: 17 s with the `--drain-seconds=1` given here) and a
#: core its jobs (`--shutdown-grace-seconds`).
_STOP_SECONDS = 30.0


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), _STOP_SECONDS)
    except TimeoutError:
        # Its group: a gateway's workers and a core's provider workers go with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def _stop_all(started: Sequence[asyncio.subprocess.Process]) -> None:
    """Stop the processes, the last started first, each in turn; to the end even if the
    tool is cancelled meanwhile (a second signal), which is raised after."""

    async def in_turn() -> None:
        for process in reversed(started):
            await _stop(process)

    await uninterrupted(in_turn())


@asynccontextmanager
async def spawned_servers(
    protocol: Protocol,
    pace: SyntheticPace,
    ready_within: float,
    *,
    server_args: Sequence[str] = (),
    gateway_args: Sequence[str] = (),
    provider: ModelProvider = ModelProvider.SYNTHETIC,
    reply_tokens: int = 600,
) -> AsyncIterator[SpawnedServers]:
    """Start the servers, wait until they are ready, yield them, stop them (gateway first).

    `server_args` and `gateway_args` are extra flags of `scriptgen server` and `gateway`.
    With the OpenAI stand-in, it starts first and stops last.
    """
    started: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="scriptgen-loadtest-") as name:
        folder = Path(name)
        try:
            async with asyncio.timeout(ready_within):
                writer_pace, extra, environment = pace, list(server_args), None
                standin: list[tuple[int, str]] = []
                if provider is ModelProvider.OPENAI_STANDIN:
                    model = await _start(
                        standin_command(pace, reply_tokens), folder / "standin.log"
                    )
                    started.append(model)
                    host, port = await _announced(model, folder / "standin.log", _STANDIN_LINE)
                    extra = standin_server_args(f"http://{host}:{port}/v1", pace) + extra
                    writer_pace = SyntheticPace(0.0, 0.0, pace.tokens_per_chunk)
                    environment = _environment(OPENAI_API_KEY=_STANDIN_KEY)
                    standin.append((model.pid, "standin"))
                command = server_command(writer_pace, folder / "data", await _server_help())
                core = await _start(command + extra, folder / "core.log", environment)
                started.append(core)
                host, port = await _announced(core, folder / "core.log", _GRPC_LINE)
                core_target = f"{host}:{port}"
                await _core_serving(core_target)
                processes = [(core.pid, "core")]
                target = Target(Protocol.GRPC, host, port)
                if protocol is Protocol.SSE:
                    gateway = await _start(
                        [
                            sys.executable,
                            "-m",
                            "scriptgen",
                            "gateway",
                            f"--core-target={core_target}",
                            "--http-address=127.0.0.1:0",
                            "--drain-seconds=1",
                            *gateway_args,
                        ],
                        folder / "gateway.log",
                    )
                    started.append(gateway)
                    host, port = await _announced(gateway, folder / "gateway.log", _HTTP_LINE)
                    target = Target(Protocol.SSE, host, port)
                    await _gateway_ready(target.base_url)
                    processes.append((gateway.pid, "gateway"))
                processes += children_of(processes) + standin
        except TimeoutError:
            await _stop_all(started)
            logs = await asyncio.to_thread(_log_tails, folder)
            raise LoadTestError(
                f"the servers were not ready within --setup-timeout {ready_within:g} s{logs}"
            ) from None
        except BaseException:
            await _stop_all(started)
            raise
        try:
            yield SpawnedServers(target, tuple(processes), folder)
        finally:
            await _stop_all(started)
