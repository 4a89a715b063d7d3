"""A real Redis for tests — never a fake.

`redis_url` (session) is SCRIPTGEN_TEST_REDIS_URL when set, else 127.0.0.1:6379
when a Redis answers there, else a throwaway `redis-server` on a free port,
started here and stopped at the end of the session. Each test isolates its
keys with a random prefix (`redis_prefix`) and deletes them afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from server.events import RedisConnection, open_redis
from tests.backends.ports import free_port

#: Longest wait for a started redis-server to answer PING, in seconds.
_START_SECONDS = 10.0


def answers(host: str, port: int, timeout: float = 0.3) -> bool:
    """Whether a Redis at host:port answers PING."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A throwaway redis-server on a fixed port that a test may stop and start again.

    `persistent` turns the append-only file on (fsync on every write), so a restart
    keeps the data; without it a restart comes back empty.
    """

    def __init__(self, port: int | None = None, *, persistent: bool = False) -> None:
        self.port = port or free_port()
        self.persistent = persistent
        self._dir = Path(tempfile.mkdtemp(prefix="scriptgen-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed and SCRIPTGEN_TEST_REDIS_URL is not set")
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                str(self._dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_SECONDS
        while not answers("127.0.0.1", self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

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
def throwaway_redis(*, persistent: bool = False) -> Iterator[RedisServer]:
    """A started RedisServer on a free port, stopped and removed afterwards."""
    server = RedisServer(persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, so its client list and command counts are the test's."""
    with throwaway_redis() as server:
        yield server


def client_count(url: str) -> int:
    """Connections the Redis server at `url` has, apart from the one asking."""
    with SyncRedis.from_url(url) as probe:
        return sum(1 for client in probe.client_list() if client.get("cmd") != "client|list")


@pytest.fixture
async def own_redis_connection(own_redis: RedisServer) -> AsyncIterator[RedisConnection]:
    """A RedisConnection to this test's own Redis (`own_redis`), closed after the test."""
    connection = open_redis(own_redis.url, "test:")
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis for the whole session."""
    configured = os.environ.get("SCRIPTGEN_TEST_REDIS_URL", "")
    if configured:
        yield configured
    elif answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
    else:
        with throwaway_redis() as server:
            yield server.url


def delete_prefixed(url: str, prefix: str) -> None:
    """Delete every key under `prefix`."""
    with SyncRedis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"scriptgen-test-{secrets.token_hex(6)}:"
    yield prefix
    delete_prefixed(redis_url, prefix)


@pytest.fixture
async def redis_connection(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisConnection]:
    """A RedisConnection under this test's prefix."""
    connection = open_redis(redis_url, redis_prefix, retry_seconds=2.0)
    try:
        yield connection
    finally:
        await connection.aclose()
