"""A real Chroma server for tests — `chroma run` from the chromadb package, never a fake.

`chroma_url` (session) is SCRIPTGEN_TEST_CHROMA_URL when set, else a throwaway
`chroma run` on a free port with its data in a temporary folder, stopped at
the end of the session. Tests isolate their collections with a random prefix
(`chroma_prefix`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backends.ports import free_port

#: Longest wait for a started Chroma to answer its heartbeat, in seconds.
_START_SECONDS = 30.0


def chroma_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Chroma server at `url` answers its heartbeat."""
    try:
        return httpx.get(f"{url}/api/v2/heartbeat", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class ChromaServer:
    """A throwaway `chroma run` that a test may stop and start again on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="scriptgen-chroma-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = Path(sys.executable).parent / "chroma"
        command = str(binary) if binary.exists() else shutil.which("chroma")
        if command is None:
            pytest.fail("`chroma` (from the chromadb package) is not installed")
        self._process = subprocess.Popen(
            [
                command,
                "run",
                "--path",
                str(self._dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        deadline = time.monotonic() + _START_SECONDS
        while not chroma_answers(self.url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"chroma run did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def throwaway_chroma(port: int | None = None) -> Iterator[ChromaServer]:
    """A started ChromaServer, stopped and removed afterwards."""
    server = ChromaServer(port)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def chroma_url() -> Iterator[str]:
    """URL of a real Chroma server for the whole session."""
    configured = os.environ.get("SCRIPTGEN_TEST_CHROMA_URL", "")
    if configured:
        yield configured
    else:
        with throwaway_chroma() as server:
            yield server.url


@pytest.fixture
def chroma_prefix() -> str:
    """A collection prefix of this test's own."""
    return f"t{secrets.token_hex(6)}"
