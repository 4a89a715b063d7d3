"""The SQLite project store: migrations, WAL, persistence, atomic episode numbers."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from scriptgen.v1 import project_pb2

from server.errors import AlreadyExists, NotFound
from server.store import SqliteProjectStore
from server.store.migrations import migrations


async def test_schema_is_migrated_once_and_wal_is_on(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteProjectStore(path)
    await store.open()
    assert await store.schema_version() == migrations()[-1].version
    await store.close()
    reopened = SqliteProjectStore(path)
    await reopened.open()  # applying again must be a no-op, not an error
    await reopened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT version FROM schema_migrations").fetchall()
    assert [r[0] for r in rows] == [m.version for m in migrations()]


async def test_data_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteProjectStore(path)
    await store.open()
    await store.create_project("show", project_pb2.Project(title="Show", language="ko"))
    await store.create_episode(
        "show", project_pb2.Episode(title="E1", script="INT. X - DAY\n", cast=["지수"])
    )
    await store.close()
    store = SqliteProjectStore(path)
    await store.open()
    project = await store.get_project("show")
    episode = await store.get_episode("show", 1)
    await store.close()
    assert project.language == "ko" and project.episode_count == 1
    assert episode.script == "INT. X - DAY\n" and list(episode.cast) == ["지수"]


async def test_episode_numbers_are_atomic_under_concurrent_saves(tmp_path: Path) -> None:
    store = SqliteProjectStore(tmp_path / "db.sqlite3")
    await store.open()
    await store.create_project("show", project_pb2.Project(title="Show"))
    saved = await asyncio.gather(
        *(store.create_episode("show", project_pb2.Episode(title=f"E{i}")) for i in range(40))
    )
    await store.close()
    assert sorted(e.number for e in saved) == list(range(1, 41))


async def test_errors_are_service_errors(tmp_path: Path) -> None:
    store = SqliteProjectStore(tmp_path / "db.sqlite3")
    await store.open()
    await store.create_project("show", project_pb2.Project(title="Show"))
    with pytest.raises(AlreadyExists):
        await store.create_project("show", project_pb2.Project(title="Again"))
    with pytest.raises(NotFound):
        await store.create_episode("missing", project_pb2.Episode(title="E"))
    with pytest.raises(NotFound):
        await store.delete_episode("show", 7)
    await store.close()
