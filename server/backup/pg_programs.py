"""PostgreSQL's client programs (pg_dump, pg_restore): found, version-checked, run safely.

pg_dump must be at least as new as the server it dumps (it refuses otherwise),
and pg_restore at least as new as the pg_dump that wrote the archive. Debian
installs each major version under /usr/lib/postgresql/N/bin, and /usr/bin
holds a wrapper; the newest of all candidates is used. The password (of the
URL's user part or its `password` parameter) never appears on a command line
(where `ps` would show it): it travels in PGPASSWORD. Output is pinned to
UTF-8 and UTC, so digests taken from it do not depend on the machine.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from server.backup.errors import BackupError

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, slots=True, order=True)
class Program:
    """One installed client program and its version."""

    major: int
    minor: int
    path: str

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"


@cache
def _program_version(path: str) -> tuple[int, int] | None:
    try:
        answer = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = _VERSION.search(answer.stdout)
    if answer.returncode != 0 or found is None:
        return None
    return int(found.group(1)), int(found.group(2) or 0)


def programs(name: str) -> list[Program]:
    """Every installed `name` (on PATH and under /usr/lib/postgresql), newest first."""
    paths = set(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    on_path = shutil.which(name)
    if on_path is not None:
        paths.add(on_path)
    found = []
    for path in paths:
        version = _program_version(path)
        if version is not None:
            found.append(Program(version[0], version[1], path))
    return sorted(found, reverse=True)


def program(name: str, server_major: int | None = None, *, archive_version: str = "") -> Program:
    """The newest installed `name`; BackupError when none is, or it is older than the server
    or (`archive_version`: the pg_dump that wrote an archive) than the archive.

    Versions compare by major: archives change format only with a major version.
    """
    found = programs(name)
    if not found:
        raise BackupError(
            f"{name} is not installed: install PostgreSQL's client programs"
            " (Debian/Ubuntu: postgresql-client) of the server's major version or newer"
        )
    newest = found[0]
    if server_major is not None and newest.major < server_major:
        raise BackupError(
            f"{name} {newest.version} ({newest.path}) is older than the PostgreSQL {server_major}"
            f" server: install postgresql-client-{server_major} or newer"
        )
    archive_major = _major(archive_version)
    if archive_major is not None and newest.major < archive_major:
        raise BackupError(
            f"{name} {newest.version} ({newest.path}) is older than pg_dump {archive_version},"
            f" which wrote the archive: install postgresql-client-{archive_major} or newer"
        )
    return newest


def _major(version: str) -> int | None:
    found = re.match(r"(\d+)", version)
    return int(found.group(1)) if found else None


def libpq(url: str) -> tuple[str, dict[str, str]]:
    """`url` without its password, and the environment the programs need (password inside).

    The password may be in the user part or a `password` query parameter; both
    are taken off the URL (which goes on pg_dump's command line, where `ps`
    shows it). When both are given, the user part's is used, as asyncpg does.
    """
    parts = urlsplit(url)
    environment = {**os.environ, "PGTZ": "UTC", "PGCLIENTENCODING": "UTF8"}
    password: str | None = None
    if parts.query:
        kept: list[str] = []
        for pair in parts.query.split("&"):
            name, equals, value = pair.partition("=")
            if equals and unquote(name) == "password":
                password = unquote(value)  # the last one counts, as in libpq and asyncpg
            else:
                kept.append(pair)
        parts = parts._replace(query="&".join(kept))
    if parts.password is not None:
        password = unquote(parts.password)
        credentials, _, host = parts.netloc.rpartition("@")
        user = credentials.partition(":")[0]
        parts = parts._replace(netloc=f"{user}@{host}" if user else host)
    if password is not None:
        environment["PGPASSWORD"] = password
    return urlunsplit(parts), environment


def database_name(url: str) -> str:
    """The database a URL names."""
    return unquote(urlsplit(url).path.lstrip("/"))


def failure(what: str, stderr: bytes | str) -> BackupError:
    """The error of a client program that failed, with the end of what it said."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return BackupError(f"{what} failed: {' | '.join(lines[-5:]) or 'no message'}")


def archive_list(path: Path) -> list[str]:
    """The table of contents of a custom-format archive (`pg_restore --list`), blocking."""
    restore = program("pg_restore")
    answer = subprocess.run(
        [restore.path, "--list", str(path)], capture_output=True, timeout=300, check=False
    )
    if answer.returncode != 0:
        raise failure(f"{path.name}: pg_restore --list", answer.stderr)
    return answer.stdout.decode("utf-8", "replace").splitlines()


def with_database(url: str, database: str) -> str:
    """`url` naming another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{quote(database)}"))
