"""Real `scriptgen server` and `scriptgen gateway` processes, and a tiny SSE reader."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SCRIPTGEN = str(Path(sys.executable).with_name("scriptgen"))
#: The endpoint lines `scriptgen server` and `scriptgen gateway` print once they listen
#: (anchored: JSON log lines on the same output may mention gRPC or HTTP too).
CORE_LINE = r"^\s+gRPC\s+(\S+)"
GATEWAY_LINE = r"^\s+HTTP\s+(\S+)"


@dataclass
class Process:
    """A running `scriptgen` child; `address` is the endpoint it printed."""

    child: asyncio.subprocess.Process
    address: str = ""
    output: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None

    async def stop(self, signum: int = signal.SIGTERM, within: float = 30) -> int:
        """Send `signum` and wait for the exit status; one that does not exit within
        `within` seconds is an AssertionError with the end of its output (then killed)."""
        if self.child.returncode is None:
            self.child.send_signal(signum)
        try:
            async with asyncio.timeout(within):
                code = await self.child.wait()
                if self.drain is not None:
                    await self.drain
        except TimeoutError:
            if self.child.returncode is None:
                self.child.kill()
            tail = "".join(self.output[-40:])
            raise AssertionError(
                f"scriptgen did not exit within {within:g}s of signal {signum}:\n{tail}"
            ) from None
        return code


async def spawn(*argv: str, pattern: str) -> Process:
    """Start `scriptgen *argv` and wait for the line naming its endpoint."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCRIPTGEN_")}
    child = await asyncio.create_subprocess_exec(
        SCRIPTGEN,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    process = Process(child)
    assert child.stdout is not None
    async with asyncio.timeout(30):
        while True:
            raw = await child.stdout.readline()
            if not raw:
                raise AssertionError(f"scriptgen {argv[0]} ended early: {process.output}")
            line = raw.decode(errors="replace")
            process.output.append(line)
            match = re.search(pattern, line)
            if match is not None:
                process.address = match.group(1)
                break
    # Keep draining the pipe so a chatty process never blocks on a full buffer.
    process.drain = asyncio.create_task(_drain(process))
    return process


async def _drain(process: Process) -> None:
    reader = process.child.stdout
    assert reader is not None
    while raw := await reader.readline():
        process.output.append(raw.decode(errors="replace"))


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE event."""

    id: int
    event: str
    data: str


async def frames(response: httpx.Response) -> list[Frame]:
    """Every SSE event of `response` until it ends (or raises when the link breaks)."""
    found: list[Frame] = []
    async for frame in iter_frames(response):
        found.append(frame)
    return found


async def iter_frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """SSE events of `response` as they arrive (comments and `retry:` skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields and "id" in fields:
                yield Frame(int(fields["id"]), fields.get("event", ""), fields["data"])
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


async def wait_ready(base: str) -> None:
    """Wait until the gateway at `base` answers /readyz with 200."""
    async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(30):
        for _ in range(300):
            if (await http.get(f"{base}readyz")).status_code == 200:
                return
            await asyncio.sleep(0.1)
