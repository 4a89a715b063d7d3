"""Readiness probes of the local storage: can the SQLite file be written, is there disk left.

The project store's own ping reads (`SELECT 1`), and in WAL mode a read still
succeeds while another process holds the write lock or the disk is full — so
readiness would stay SERVING while every save fails. These probes look at what
a save needs:

* `SqliteWriteProbe` takes and releases the write lock (`BEGIN IMMEDIATE;
  ROLLBACK`) on a connection of its own, waiting at most `busy_seconds` (3 s);
* `DiskSpaceProbe` checks that the folders holding local state (the SQLite
  file, embedded Chroma) have at least `min_free_bytes` free.

Each raises Unavailable (STORE_UNAVAILABLE) while its fault lasts; server.health
polls them with the other dependencies.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from server.config import CoreConfig
from server.errors import Unavailable
from server.storage_faults import STORE_RETRY_SECONDS, store_fault
from server.store.factory import sqlite_path


def _unavailable(problem: str) -> Unavailable:
    return Unavailable(
        f"the project store {problem}", reason="STORE_UNAVAILABLE", retry_after=STORE_RETRY_SECONDS
    )


class SqliteWriteProbe:
    """Unavailable while the SQLite write lock cannot be taken within `busy_seconds`."""

    # 3 s: under load the core's own transactions hold the lock across event-loop turns
    # (1 s gave false alarms in the soak); a real fault is a lock held past the store's 5 s.
    def __init__(self, path: Path, busy_seconds: float = 3.0) -> None:
        self._path = path
        self._busy_seconds = busy_seconds

    def _take_write_lock(self) -> None:
        if not self._path.exists():
            return  # not created yet (the store opens it): nothing to probe
        connection = sqlite3.connect(self._path, timeout=self._busy_seconds)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    async def ping(self) -> None:
        try:
            await asyncio.to_thread(self._take_write_lock)
        except sqlite3.Error as error:
            raise store_fault(error) or _unavailable(f"cannot be written: {error}") from None


class DiskSpaceProbe:
    """Unavailable while a folder holding local state has less than `min_free_bytes` free."""

    def __init__(self, folders: Sequence[Path], min_free_bytes: int) -> None:
        self._folders = list(dict.fromkeys(folders))
        self._min_free = min_free_bytes

    def _check(self) -> None:
        for folder in self._folders:
            try:
                stats = os.statvfs(folder)
            except FileNotFoundError:
                continue  # created on first use
            except OSError as error:
                raise _unavailable(f"cannot reach its disk at {folder}: {error}") from None
            free = stats.f_bavail * stats.f_frsize
            if free < self._min_free:
                raise _unavailable(
                    f"disk is (nearly) full: {free // 1024} KiB free at {folder},"
                    f" needs {self._min_free // 1024} KiB; free some space"
                )

    async def ping(self) -> None:
        if self._min_free > 0:
            self._check()


def local_storage_probes(
    config: CoreConfig,
) -> dict[str, SqliteWriteProbe | DiskSpaceProbe]:
    """The probes of this core's local storage, by name (none for PostgreSQL + Chroma server)."""
    probes: dict[str, SqliteWriteProbe | DiskSpaceProbe] = {}
    folders: list[Path] = []
    database = sqlite_path(config.database_url, config.data_dir)
    if database is not None:
        probes["project store writes"] = SqliteWriteProbe(database)
        folders.append(database.parent)
    if not config.knowledge.chroma_url:
        folders.append(config.data_dir)
    if folders:
        probes["local disk"] = DiskSpaceProbe(folders, int(config.min_free_disk_mb * 2**20))
    return probes
