"""`scriptgen gateway --workers N`: N gateway processes sharing one port via SO_REUSEPORT.

One Python process streams on one core. The gateway holds no state of its own
(every stream is a gRPC call to the core), so several gateway processes can
listen on the same address with SO_REUSEPORT and the kernel spreads new
connections over them. This supervisor reserves the port (so port 0 resolves
once, for all), starts the workers as `scriptgen gateway --workers 1
--reuse-port` with the same flags, waits until each has started (its metrics file
is in the shared folder, see below) and one answers `/healthz`, and on
SIGINT/SIGTERM stops them all, together, within the time a worker's own stop may
take (`worker_stop_seconds`; one that outlasts it is killed); if one worker dies,
the others are stopped too. The exit status is 1 when a worker died before it was
asked to stop or did not stop cleanly (a nonzero status, or killed), else 0.
The workers share their metrics through a temporary folder of the supervisor's
(`--worker-metrics-dir`, each `--worker-name` its number), so a scrape of
`/metrics`, which reaches one of them, answers for all (`gateway.worker_metrics`);
the folder goes when they stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from gateway.worker_metrics import SUFFIX as METRICS_SUFFIX
from scriptgen.cli._exit import EXIT_WAIT_SECONDS

if TYPE_CHECKING:
    from gateway import GatewayConfig

#: How long the workers get to listen before the start counts as failed, in seconds.
START_SECONDS = 30.0
#: How long the start waits for every worker's metrics file before one answer will do.
ALL_STARTED_SECONDS = 10.0
MAX_WORKERS = 64
#: Beyond its own bound, how long a stopping worker may take to be reaped.
STOP_MARGIN_SECONDS = 5.0


def worker_stop_seconds(settings: GatewayConfig) -> float:
    """The longest a worker's stop takes with `settings`: readiness turned 503 for the stop
    delay, open requests' drain, as long again for those cancelled then, and the exit's wait
    for its threads (gateway.server.GatewayServer.stop, scriptgen.cli._exit)."""
    return (
        settings.stop_delay_seconds
        + 2 * settings.drain_seconds
        + EXIT_WAIT_SECONDS
        + STOP_MARGIN_SECONDS
    )


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to host:port with SO_REUSEPORT, holding the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
    except BaseException:
        holder.close()
        raise
    return holder


def worker_command(
    arguments: Sequence[str], host: str, port: int, metrics_dir: str, name: str
) -> list[str]:
    """The command line of one worker: the same flags, the reserved address, one process,
    the shared metrics folder and its name there."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        sys.executable,
        "-m",
        "scriptgen",
        "gateway",
        *arguments,
        f"--http-address={address}",
        "--workers=1",
        "--reuse-port",
        f"--worker-metrics-dir={metrics_dir}",
        f"--worker-name={name}",
    ]


async def _healthy(
    url: str, workers: Sequence[asyncio.subprocess.Process], started: Sequence[Path]
) -> None:
    """Return once one worker answers `url` and every worker has started: its metrics file
    is in the shared folder (it takes stop signals by then). A worker that could not write
    its file (the write is retried, and only logged) is waited for ALL_STARTED_SECONDS."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with aiohttp.ClientSession() as session:
        while True:
            if any(worker.returncode is not None for worker in workers):
                raise RuntimeError("a gateway worker exited while starting")
            waited = loop.time() - began
            if waited > ALL_STARTED_SECONDS or all(path.exists() for path in started):
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
            if waited > START_SECONDS:
                raise RuntimeError(f"no gateway worker answered {url} within {START_SECONDS:g}s")
            await asyncio.sleep(0.1)


async def _stop(workers: Sequence[asyncio.subprocess.Process], wait_seconds: float) -> None:
    """SIGTERM to every worker still running, then one wait of `wait_seconds` for them all;
    SIGKILL for any still there after it."""
    for worker in workers:
        if worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
    waits = [asyncio.ensure_future(worker.wait()) for worker in workers]
    try:
        if waits:
            await asyncio.wait(waits, timeout=wait_seconds)
    finally:
        for wait in waits:
            wait.cancel()
    for worker in workers:
        if worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
            await worker.wait()


class GatewayWorkers:
    """The running workers of one supervisor."""

    def __init__(
        self,
        arguments: Sequence[str],
        host: str,
        port: int,
        count: int,
        *,
        stop_seconds: float = EXIT_WAIT_SECONDS + STOP_MARGIN_SECONDS,
    ) -> None:
        if not 2 <= count <= MAX_WORKERS:
            raise ValueError(f"--workers must be 2..{MAX_WORKERS} for a supervisor")
        self._arguments = list(arguments)
        self._host = host
        self._holder = reserve_port(host, port)
        self.port = int(self._holder.getsockname()[1])
        self._count = count
        self._stop_seconds = stop_seconds
        self._workers: list[asyncio.subprocess.Process] = []
        self._metrics_dir = ""

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self._workers]

    async def start(self) -> None:
        """Start the workers and wait until one of them answers."""
        try:
            self._metrics_dir = tempfile.mkdtemp(prefix="scriptgen-gateway-metrics-")
            for number in range(1, self._count + 1):
                command = worker_command(
                    self._arguments, self._host, self.port, self._metrics_dir, str(number)
                )
                self._workers.append(
                    await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL)
                )
            host = f"[{self._host}]" if ":" in self._host else self._host
            if host in ("0.0.0.0", "[::]"):
                host = "127.0.0.1"
            started = [
                Path(self._metrics_dir) / f"{number}{METRICS_SUFFIX}"
                for number in range(1, self._count + 1)
            ]
            await _healthy(f"http://{host}:{self.port}/healthz", self._workers, started)
        except BaseException:
            await self.stop()
            raise

    async def wait_any(self) -> None:
        """Return when any worker exits."""
        waits = [asyncio.create_task(worker.wait()) for worker in self._workers]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def stop(self, *, asked: bool = True) -> int:
        """Stop every worker; 0 when each ran until the stop and then ended cleanly.

        `asked`: the supervisor was asked to stop (a signal), so a worker already gone ended
        on the same request (Ctrl-C reaches every process of the terminal's group), not by a
        fault of its own; its status still counts."""
        died = not asked and any(worker.returncode is not None for worker in self._workers)
        try:
            await _stop(self._workers, self._stop_seconds)
        finally:
            self._holder.close()
            if self._metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        failed = any(worker.returncode != 0 for worker in self._workers)
        return 1 if died or failed else 0
