"""A real PostgreSQL for tests — never a fake.

`postgres_url` (session) is the URL of a server where tests may create
databases: SCRIPTGEN_TEST_POSTGRES_URL when set; else 127.0.0.1:5432 (the port
can be changed with SCRIPTGEN_TEST_POSTGRES_PORT) when a server there lets user
`postgres` or the current user in without a password; else a throwaway cluster
(initdb + pg_ctl from PATH or /usr/lib/postgresql/*/bin) on a free port, with
trust auth, removed at the end of the session. Point
SCRIPTGEN_TEST_POSTGRES_PORT at a closed port to take the throwaway path.

Each test gets a fresh database of its own (`fresh_database`), dropped after.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import getpass
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.backends.ports import free_port

#: Longest wait for a probe connection or a started cluster, in seconds.
_CONNECT_SECONDS = 3.0
_START_SECONDS = 30.0


def with_database(url: str, database: str) -> str:
    """`url` naming another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def _accepts(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=_CONNECT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await connection.close()
    return True


def accepts(url: str) -> bool:
    """Whether a PostgreSQL at `url` lets us in (runs its own loop, callable from any)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _accepts(url)).result()


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if not candidates:
        pytest.fail(
            f"{name} is not installed and SCRIPTGEN_TEST_POSTGRES_URL is not set;"
            " install PostgreSQL or point SCRIPTGEN_TEST_POSTGRES_URL at a server"
        )
    return candidates[-1]


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, listening on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="scriptgen-postgres-"))
        self._data = self._dir / "data"
        self._pg_ctl = _binary("pg_ctl")
        self._initdb = str(Path(self._pg_ctl).with_name("initdb"))
        if not Path(self._initdb).exists():
            self._initdb = _binary("initdb")
        # PostgreSQL refuses to run as root; as root, run it as the `postgres` user.
        self._user: int | None = None
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            self._user = account.pw_uid
            os.chown(self._dir, account.pw_uid, account.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        completed = subprocess.run(
            command,
            user=self._user,
            capture_output=True,
            text=True,
            timeout=_START_SECONDS,
            check=False,
        )
        if completed.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed: {completed.stderr or completed.stdout}")

    def start(self) -> None:
        self._run(
            self._initdb,
            "--pgdata",
            str(self._data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self._dir} -c fsync=off -c max_connections=200"
        )
        self._run(
            self._pg_ctl,
            "--pgdata",
            str(self._data),
            "--log",
            str(self._dir / "server.log"),
            "--options",
            options,
            "--timeout",
            str(int(_START_SECONDS)),
            "--wait",
            "start",
        )

    def close(self) -> None:
        if (self._data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                subprocess.run(
                    [self._pg_ctl, "--pgdata", str(self._data), "--mode", "immediate", "stop"],
                    user=self._user,
                    capture_output=True,
                    timeout=_START_SECONDS,
                    check=False,
                )
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresCluster]:
    """A started PostgresCluster on a free port, stopped and removed afterwards."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def local_postgres_url() -> str | None:
    """A local server that lets `postgres` or the current user in, if there is one."""
    port = int(os.environ.get("SCRIPTGEN_TEST_POSTGRES_PORT", "5432"))
    for user in dict.fromkeys(("postgres", getpass.getuser())):
        url = f"postgresql://{user}@127.0.0.1:{port}/postgres"
        if accepts(url):
            return url
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a real PostgreSQL for the whole session, on which tests may create databases."""
    configured = os.environ.get("SCRIPTGEN_TEST_POSTGRES_URL", "")
    local = configured or local_postgres_url()
    if local:
        yield local
    else:
        with throwaway_postgres() as cluster:
            yield cluster.url


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on `server_url`'s server; its URL. Dropped afterwards."""
    name = f"scriptgen_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server_url, timeout=_CONNECT_SECONDS)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url, timeout=_CONNECT_SECONDS)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
