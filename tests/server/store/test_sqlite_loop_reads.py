"""Reads on the loop answer at once from a separate connection, and never wait for a lock."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from scriptgen.v1 import project_pb2

from server.errors import ServiceError
from server.store.sqlite import SqliteProjectStore
from server.store.sqlite_loop_reads import LoopReads


async def test_loop_reads_see_each_commit_of_the_store_at_once(tmp_path: Path) -> None:
    store = SqliteProjectStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        await store.create_project("p1", project_pb2.Project(title="First"))
        assert (await store.get_project("p1")).title == "First"
        await store.update_project("p1", project_pb2.Project(title="Second"), ["title"])
        assert (await store.get_project("p1")).title == "Second"
        assert await store.latest_episodes("p1", 3) == []
        await store.delete_project("p1", force=True)
        with pytest.raises(ServiceError) as gone:
            await store.get_project("p1")
        assert gone.value.reason == "PROJECT_NOT_FOUND"
    finally:
        await store.close()


def test_a_locked_file_answers_none_at_once_instead_of_waiting(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite3"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (x INTEGER)")
    setup.execute("INSERT INTO t VALUES (1)")
    setup.close()
    # Another process's exclusive lock: even a WAL reader would have to wait for it.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t VALUES (2)")
    reads = LoopReads(path)
    reads.open()
    try:
        started = time.monotonic()
        assert reads.rows("SELECT x FROM t", ()) is None
        assert time.monotonic() - started < 0.5
        holder.execute("COMMIT")
        holder.close()
        assert reads.rows("SELECT x FROM t ORDER BY x", ()) == [(1,), (2,)]
    finally:
        reads.close()
    assert reads.rows("SELECT x FROM t", ()) is None, "a closed reader answers None"


def test_the_loop_connection_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "ro.sqlite3"
    sqlite3.connect(path).close()
    reads = LoopReads(path)
    reads.open()
    try:
        with pytest.raises((sqlite3.Error, ServiceError)):
            reads.rows("CREATE TABLE t (x INTEGER)", ())
    finally:
        reads.close()
