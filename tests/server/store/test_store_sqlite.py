"""What only the SQLite store promises: WAL mode and its migration bookkeeping on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from scriptgen.v1 import project_pb2

from server.store import SqliteProjectStore
from server.store.migrations import migrations


async def test_wal_is_on_and_each_migration_is_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    for _ in range(2):
        store = SqliteProjectStore(path)
        await store.open()
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert rows == [(m.version, m.name) for m in migrations("sqlite")]


async def test_a_database_from_the_first_schema_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    first = migrations("sqlite")[0]
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_time INTEGER NOT NULL)"
        )
        db.executescript(first.sql)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (first.version, first.name))
        db.execute(
            "INSERT INTO projects (id, title, type, logline, description, language,"
            " create_time, update_time) VALUES ('old', 'Old', 1, '', '', 'en', 1, 1)"
        )
    store = SqliteProjectStore(path)
    await store.open()
    try:
        assert await store.schema_version() == migrations("sqlite")[-1].version
        assert (await store.get_project("old")).title == "Old"
    finally:
        await store.close()


async def test_reads_do_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    """Reads have a connection of their own: a burst of job starts does not take turns.

    They see what is committed, not a transaction still open on the write connection.
    """
    store = SqliteProjectStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        await store.create_project("show", project_pb2.Project(title="Before"))
        async with store._transaction() as db:  # a write in progress, holding the write lock
            await db.execute("UPDATE projects SET title = 'During' WHERE id = 'show'")
            reads = [store.get_project("show") for _ in range(50)]
            found = await asyncio.wait_for(asyncio.gather(*reads), 5)
            assert {project.title for project in found} == {"Before"}
            assert await asyncio.wait_for(store.latest_episodes("show", 3), 5) == []
        assert (await store.get_project("show")).title == "During"
    finally:
        await store.close()
