"""`scriptgen gateway --workers N`: N gateway processes sharing one port via SO_REUSEPORT.

One Python process streams on one core. The gateway holds no state of its own
(every stream is a gRPC call to the core), so several gateway processes can
listen on the same address with SO_REUSEPORT and the kernel spreads new
connections over them. This supervisor reserves the port (so port 0 resolves
once, for all), starts the workers as `scriptgen gateway --workers 1
--reuse-port` with the same flags, waits until one answers `/healthz`, and on
SIGINT/SIGTERM stops them all; if one worker dies, the others are stopped too
and the exit status is 1. The workers share their metrics through a temporary
folder of the supervisor's (`--worker-metrics-dir`, each `--worker-name` its
number), so a scrape of `/metrics`, which reaches one of them, answers for all
(`gateway.worker_metrics`); the folder goes when they stop.
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

import aiohttp

#: How long the workers get to listen before the start counts as failed, in seconds.
START_SECONDS = 30.0
MAX_WORKERS = 64


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


async def _healthy(url: str, workers: Sequence[asyncio.subprocess.Process]) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            if any(worker.returncode is not None for worker in workers):
                raise RuntimeError("a gateway worker exited while starting")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)


async def _stop(workers: Sequence[asyncio.subprocess.Process]) -> None:
    for worker in workers:
        if worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            await asyncio.wait_for(worker.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
            await worker.wait()


class GatewayWorkers:
    """The running workers of one supervisor."""

    def __init__(self, arguments: Sequence[str], host: str, port: int, count: int) -> None:
        if not 2 <= count <= MAX_WORKERS:
            raise ValueError(f"--workers must be 2..{MAX_WORKERS} for a supervisor")
        self._arguments = list(arguments)
        self._host = host
        self._holder = reserve_port(host, port)
        self.port = int(self._holder.getsockname()[1])
        self._count = count
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
            async with asyncio.timeout(START_SECONDS):
                await _healthy(f"http://{host}:{self.port}/healthz", self._workers)
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

    async def stop(self) -> int:
        """Stop every worker; 0 when all were still running until asked to stop."""
        died = any(worker.returncode is not None for worker in self._workers)
        try:
            await _stop(self._workers)
        finally:
            self._holder.close()
            if self._metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        return 1 if died else 0
