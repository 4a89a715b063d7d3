"""`scriptgen serve|server|gateway` and `scriptgen generate` as real processes: printed
endpoints with the real bound ports, readiness, graceful exit on SIGTERM/SIGINT, and
Ctrl-C cancelling (or, with --detach, leaving) the job."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from scriptgen import Client, ClientConfig
from scriptgen.cli import main
from scriptgen.cli._exit import EXIT_TIMER_NAME
from scriptgen.v1 import generation_pb2

SCRIPTGEN = str(Path(sys.executable).with_name("scriptgen"))


class Process:
    """A running `scriptgen` child with its output read line by line."""

    def __init__(self, child: asyncio.subprocess.Process) -> None:
        self.child = child
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    async def read_line(self, stream: str, pattern: str, within: float = 30) -> re.Match[str]:
        """Read `stream` until a line matches `pattern`."""
        reader = self.child.stdout if stream == "stdout" else self.child.stderr
        lines = self.stdout if stream == "stdout" else self.stderr
        assert reader is not None
        async with asyncio.timeout(within):
            while True:
                raw = await reader.readline()
                if not raw:
                    raise AssertionError(f"{stream} ended before {pattern!r}: {lines}")
                line = raw.decode()
                lines.append(line)
                match = re.search(pattern, line)
                if match is not None:
                    return match

    async def finish(self, signum: int | None = None, within: float = 30) -> int:
        """Send `signum` (if any) and wait for the exit status, reading what is left."""
        if signum is not None:
            self.child.send_signal(signum)
        async with asyncio.timeout(within):
            out, err = await self.child.communicate()
        self.stdout.append(out.decode())
        self.stderr.append(err.decode())
        assert self.child.returncode is not None
        return self.child.returncode


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[..., Awaitable[Process]]]:
    started: list[Process] = []
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCRIPTGEN_")}

    async def run(*argv: str, extra_env: dict[str, str] | None = None) -> Process:
        child = await asyncio.create_subprocess_exec(
            SCRIPTGEN,
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, **(extra_env or {})},
        )
        process = Process(child)
        started.append(process)
        return process

    yield run
    for process in started:
        if process.child.returncode is None:
            process.child.kill()
            await process.child.wait()


async def _wait_ready(http: httpx.AsyncClient, base: str) -> None:
    async with asyncio.timeout(15):
        while True:
            response = await http.get(f"{base}readyz")
            if response.status_code == 200:
                return
            await asyncio.sleep(0.1)


async def test_serve_runs_core_and_gateway_on_port_0_and_stops_on_sigterm(
    spawn: Callable[..., Awaitable[Process]], tmp_path: Path
) -> None:
    serve = await spawn(
        "serve",
        "--grpc-address",
        "127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
        "--metrics-address",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path / "data"),
    )
    grpc_target = (await serve.read_line("stdout", r"gRPC\s+(\S+)")).group(1)
    http_base = (await serve.read_line("stdout", r"HTTP\s+(\S+)")).group(1)
    metrics_url = (await serve.read_line("stdout", r"metrics\s+(\S+)")).group(1)
    for address in (grpc_target, http_base, metrics_url):
        assert not re.search(r":0(/|$)", address), "real bound ports are printed"
    # A fresh data dir: serve made a local key, printed it, and saved it (0600).
    key = (await serve.read_line("stdout", r"SCRIPTGEN_API_KEY=(\S+)")).group(1)
    saved = tmp_path / "data" / "local-api-key"
    assert saved.read_text().strip() == key and saved.stat().st_mode & 0o777 == 0o600

    async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {key}"}) as http:
        await _wait_ready(http, http_base)
        created = await http.post(f"{http_base}v1/projects", json={"title": "Over HTTP"})
        assert created.status_code in (200, 201), created.text
        name = created.json()["name"]
        listed = await http.get(f"{http_base}v1/projects")
        assert [project["name"] for project in listed.json()["projects"]] == [name]
        metrics = await http.get(metrics_url)
        assert metrics.status_code == 200

    async with Client(grpc_target, ClientConfig(api_key=key)) as client:
        assert (await client.get_project(name)).title == "Over HTTP"

    assert await serve.finish(signal.SIGTERM) == 0
    assert (tmp_path / "data").is_dir()
    assert "Traceback" not in "".join(serve.stderr)


async def test_server_runs_the_core_alone_and_stops_on_sigint(
    spawn: Callable[..., Awaitable[Process]], tmp_path: Path
) -> None:
    server = await spawn(
        "server",
        "--auth",
        "disabled",
        "--grpc-address",
        "127.0.0.1:0",
        "--metrics-address",
        "off",
        "--data-dir",
        str(tmp_path),
    )
    grpc_target = (await server.read_line("stdout", r"gRPC\s+(\S+)")).group(1)
    await server.read_line("stdout", r"Press Ctrl-C")
    async with Client(grpc_target) as client:
        project = await client.create_project(title="Core Only")
        assert (await client.get_project(project.name)).title == "Core Only"
    assert await server.finish(signal.SIGINT) == 0
    assert not any("metrics" in line for line in server.stdout), "metrics were off"
    # The log flags take effect: one JSON object per line on stderr, calls included.
    records = [json.loads(line) for line in "".join(server.stderr).splitlines()]
    created = [r for r in records if r.get("method") == "CreateProject"]
    assert len(created) == 1
    assert created[0]["level"] == "INFO"
    assert created[0]["code"] == "OK"
    assert created[0]["request_id"]


async def test_gateway_runs_alone_in_front_of_a_core(
    spawn: Callable[..., Awaitable[Process]], core_target: str, client: Client
) -> None:
    project = await client.create_project(title="Behind the Gateway")
    gateway = await spawn("gateway", "--core-target", core_target, "--http-address", "127.0.0.1:0")
    http_base = (await gateway.read_line("stdout", r"HTTP\s+(\S+)")).group(1)
    async with httpx.AsyncClient(timeout=10) as http:
        await _wait_ready(http, http_base)
        shown = await http.get(f"{http_base}v1/{project.name}")
        assert shown.status_code == 200
        assert shown.json()["title"] == "Behind the Gateway"
    assert await gateway.finish(signal.SIGTERM) == 0


async def test_ctrl_c_on_generate_cancels_the_job(
    spawn: Callable[..., Awaitable[Process]], slow_target: str, slow_client: Client
) -> None:
    project = await slow_client.create_project(title="Interrupted")
    generate = await spawn("generate", project.name, "--title", "Pilot", "--target", slow_target)
    job = (await generate.read_line("stderr", r"queued (generations/\S+)")).group(1)
    await generate.read_line("stderr", r"» write")
    await generate.read_line("stdout", r"\S")  # the script is being written
    assert await generate.finish(signal.SIGINT, within=15) == 130
    assert f"cancelled {job}" in "".join(generate.stderr)
    running = (generation_pb2.GENERATION_STATE_QUEUED, generation_pb2.GENERATION_STATE_RUNNING)
    ended = await slow_client.get_generation(job)
    async with asyncio.timeout(10):
        while ended.state in running:
            await asyncio.sleep(0.05)
            ended = await slow_client.get_generation(job)
    assert ended.state == generation_pb2.GENERATION_STATE_CANCELLED


async def test_ctrl_c_on_generate_with_detach_leaves_the_job_running(
    spawn: Callable[..., Awaitable[Process]], slow_target: str, slow_client: Client
) -> None:
    project = await slow_client.create_project(title="Left Running")
    generate = await spawn(
        "generate", project.name, "--title", "Pilot", "--detach", "--target", slow_target
    )
    job = (await generate.read_line("stderr", r"queued (generations/\S+)")).group(1)
    await generate.read_line("stdout", r"\S")
    assert await generate.finish(signal.SIGINT, within=15) == 130
    assert f"scriptgen generations follow {job} --after " in "".join(generate.stderr)
    async with slow_client.follow(job) as stream:
        result = await stream.collect()
    assert result.outcome == "completed"


@pytest.mark.parametrize(
    ("command", "flag", "who"),
    [
        ("gateway", "--http-address", "gateway"),
        ("serve", "--http-address", "gateway"),
        ("server", "--metrics-address", "core"),
    ],
)
async def test_a_taken_address_is_one_error_line_and_exit_1(
    spawn: Callable[..., Awaitable[Process]],
    tmp_path: Path,
    command: str,
    flag: str,
    who: str,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        argv = [command, flag, address]
        if command != "gateway":
            argv += ["--grpc-address", "127.0.0.1:0", "--data-dir", str(tmp_path)]
        if command == "serve":
            argv += ["--metrics-address", "off"]
        process = await spawn(*argv)
        assert await process.finish(within=20) == 1
    # Beside the JSON log records, the failure is one plain line, not a traceback.
    lines = "".join(process.stderr).splitlines()
    plain = [line for line in lines if not line.startswith("{")]
    assert len(plain) == 1, lines
    assert plain[0].startswith(f"scriptgen: error: the {who} could not start: "), lines
    assert "address already in use" in plain[0]
    assert all(json.loads(line)["level"] != "ERROR" for line in lines if line.startswith("{"))


async def test_serve_with_a_taken_http_address_does_not_start_the_core(
    spawn: Callable[..., Awaitable[Process]], tmp_path: Path
) -> None:
    # A core started for nothing opened its stores, and was stopped while the gateway's
    # gRPC connection to it was still closing: gRPC printed the GOAWAY it received.
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        process = await spawn(
            "serve",
            "--http-address",
            address,
            "--grpc-address",
            "127.0.0.1:0",
            "--metrics-address",
            "off",
            "--data-dir",
            str(data),
        )
        assert await process.finish(within=20) == 1
    lines = "".join(process.stderr).splitlines()
    assert not any("core serving gRPC" in line for line in lines), lines
    assert not data.exists() or not any(data.iterdir()), sorted(data.rglob("*"))


async def test_generate_into_a_closed_pipe_exits_quietly(
    slow_target: str, slow_client: Client
) -> None:
    # Paced, so the script is still being written when `head` closes the pipe.
    project = await slow_client.create_project(title="Just the Opening")
    pipeline = (
        f"{SCRIPTGEN} generate {project.name} --title Pilot --quiet --target {slow_target}"
        " | head -n 1; echo status=${PIPESTATUS[0]}"
    )
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        pipeline,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await shell.communicate()
    first_line, status = out.decode().splitlines()
    assert first_line.strip()
    assert status == "status=141"
    assert err.decode() == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["server", "--write-providers", "bogus"], "unknown provider 'bogus'"),
        (["server", "--database-url", "mysql://db/x"], "database URL"),
        (["server", "--redis-url", "localhost:6379"], "--redis-url"),
        (["serve", "--http-address", "localhost"], "--http-address"),
        (["serve", "--http-address", "127.0.0.1:99999"], "--http-address"),
        (["serve", "--ping-interval-seconds", "0"], "--ping-interval-seconds"),
        (["serve", "--drain-seconds", "nan"], "--drain-seconds"),
        (["serve", "--drain-seconds", "0"], "--drain-seconds"),  # aiohttp: no bound at all
    ],
)
async def test_a_bad_configuration_is_one_error_line_and_exit_2(
    spawn: Callable[..., Awaitable[Process]], tmp_path: Path, argv: list[str], message: str
) -> None:
    process = await spawn(
        *argv,
        "--grpc-address",
        "127.0.0.1:0",
        "--metrics-address",
        "off",
        "--data-dir",
        str(tmp_path),
    )
    assert await process.finish(within=20) == 2
    err = "".join(process.stderr)
    assert err.startswith("scriptgen: error: invalid configuration: "), err
    assert message in err
    assert err.count("\n") == 1


def _lone_core(data_dir: Path, *flags: str) -> tuple[str, ...]:
    """`scriptgen server` on a free port, without metrics or API keys, plus `flags`."""
    return (
        "server",
        *flags,
        "--grpc-address",
        "127.0.0.1:0",
        "--metrics-address",
        "off",
        "--auth",
        "disabled",
        "--data-dir",
        str(data_dir),
    )


async def _one_start_error_line(process: Process, naming: str) -> None:
    """The core exits 1 with one line saying it could not start, `naming` the cause."""
    assert await process.finish(within=30) == 1
    err = "".join(process.stderr)
    assert err.startswith("scriptgen: error: the core could not start: "), err
    assert naming in err, err
    assert err.count("\n") == 1


async def test_an_unreachable_store_at_start_is_one_error_line_and_exit_1(
    spawn: Callable[..., Awaitable[Process]], tmp_path: Path
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = closed.getsockname()[1]  # bound, never listening: connections are refused
        process = await spawn(*_lone_core(tmp_path, "--redis-url", f"redis://127.0.0.1:{nobody}/0"))
        await _one_start_error_line(process, "Redis")


async def test_a_bad_ca_file_at_start_is_one_error_line_and_exit_1(
    spawn: Callable[..., Awaitable[Process]], tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    process = await spawn(
        *_lone_core(tmp_path / "data", "--write-providers", "openai"),
        extra_env={"OPENAI_API_KEY": "sk-test", "SSL_CERT_FILE": str(bundle)},
    )
    # "CERTIFICATE": the TLS library's own words about the bundle.
    await _one_start_error_line(process, "CERTIFICATE")


_EXIT_SCRIPT = """
import sys, threading, time
import scriptgen.cli as cli
from scriptgen.cli import _exit

_exit.EXIT_WAIT_SECONDS = 0.5

async def stopped_leaving_a_thread(command, args):
    # What a pool's worker still running a call on a dead server is to the exit.
    if threads == "stuck":
        threading.Thread(target=time.sleep, args=(3600,), name="stuck-call").start()
    return 0

cli._execute = stopped_leaving_a_thread
threads, command, data_dir = sys.argv[1:]
# The process's own command line, as the `scriptgen` script passes it: main() reads sys.argv.
sys.argv = ["scriptgen", command, "--grpc-address=127.0.0.1:0", "--data-dir=" + data_dir]
sys.exit(cli.main())
"""


@pytest.mark.parametrize("threads", ["stuck", "none"])
async def test_a_server_process_exits_even_when_a_thread_does_not_end(
    threads: str, tmp_path: Path
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _EXIT_SCRIPT,
        threads,
        "server",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):  # not the 3600 s the thread would hold it
            _, stderr = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == 0
    said = stderr.decode()
    if threads == "stuck":
        assert "1 threads still ran 0.5s later (stuck-call); exiting without them" in said
    else:
        assert "exiting without them" not in said


def test_main_called_with_arguments_of_its_own_does_not_bound_the_callers_exit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only the process's own command (no `argv`) is bounded: a test or an embedding that
    calls `main` must not be ended 10 s later."""
    assert main(["gateway", "--http-address=127.0.0.1:0", "--worker-name=a"]) == 2
    assert EXIT_TIMER_NAME not in [thread.name for thread in threading.enumerate()]
    assert "invalid configuration" in capsys.readouterr().err
