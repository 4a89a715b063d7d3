"""The `scriptgen` command as a real child process, for the operator-facing security tests."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

SCRIPTGEN = str(Path(sys.executable).with_name("scriptgen"))


def _environment() -> dict[str, str]:
    """This process's environment without SCRIPTGEN_* settings (flags say everything)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("SCRIPTGEN_")}


@dataclass(frozen=True)
class Finished:
    status: int
    stdout: str
    stderr: str


async def scriptgen(*argv: str, within: float = 60) -> Finished:
    """Run `scriptgen ARGV` to its end."""
    child = await asyncio.create_subprocess_exec(
        SCRIPTGEN,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(),
    )
    try:
        async with asyncio.timeout(within):
            out, err = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode is not None
    return Finished(child.returncode, out.decode(), err.decode())


class Running:
    """A long-running `scriptgen` child whose output is read line by line."""

    def __init__(self, child: asyncio.subprocess.Process) -> None:
        self.child = child
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}

    async def read_line(self, stream: str, pattern: str, within: float = 30) -> re.Match[str]:
        """Read `stream` until a line matches `pattern`."""
        reader = self.child.stdout if stream == "stdout" else self.child.stderr
        assert reader is not None
        async with asyncio.timeout(within):
            while True:
                raw = await reader.readline()
                if not raw:
                    raise AssertionError(f"{stream} ended before {pattern!r}: {self.lines}")
                line = raw.decode()
                self.lines[stream].append(line)
                found = re.search(pattern, line)
                if found is not None:
                    return found


@asynccontextmanager
async def running(*argv: str) -> AsyncIterator[Running]:
    """`scriptgen ARGV` running for the `with` body, then stopped (SIGTERM, else killed)."""
    child = await asyncio.create_subprocess_exec(
        SCRIPTGEN,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(),
    )
    try:
        yield Running(child)
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                async with asyncio.timeout(15):
                    await child.communicate()
            except TimeoutError:
                child.kill()
                await child.wait()
