"""The SQLite project store: WAL mode, versioned migrations, atomic episode numbers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
from google.protobuf import timestamp_pb2
from scriptgen.v1 import project_pb2

from server.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from server.store.migrations import migrations

_PROJECT_COLUMNS = "id, title, type, logline, description, language, create_time, update_time"
_EPISODE_SUMMARY_COLUMNS = (
    "project_id, number, title, '' AS script, '' AS outline, generation,"
    " scene_count, word_count, cast_json, create_time"
)
_EPISODE_COLUMNS = (
    "project_id, number, title, script, outline, generation,"
    " scene_count, word_count, cast_json, create_time"
)


def _now_micros() -> int:
    return time.time_ns() // 1000


def _timestamp(micros: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


class SqliteProjectStore:
    """Projects and episodes in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._connection: aiosqlite.Connection | None = None
        # One connection is shared by every coroutine; write transactions must not interleave.
        self._write_lock = asyncio.Lock()

    @property
    def _db(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise Unavailable("the project store is not open", reason="STORE_UNAVAILABLE")
        return self._connection

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = await aiosqlite.connect(self._path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def ping(self) -> None:
        try:
            await self._db.execute("SELECT 1")
        except sqlite3.Error as error:
            raise Unavailable(
                f"the project store failed: {error}", reason="STORE_UNAVAILABLE"
            ) from None

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _migrate(self) -> None:
        async with self._transaction() as db:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_time INTEGER NOT NULL)"
            )
            async with db.execute("SELECT version FROM schema_migrations") as cursor:
                applied = {row[0] for row in await cursor.fetchall()}
            for migration in migrations():
                if migration.version in applied:
                    continue
                # executescript would COMMIT our transaction; run statement by statement.
                for statement in migration.sql.split(";"):
                    if statement.strip():
                        await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_time) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _now_micros()),
                )

    async def schema_version(self) -> int:
        """The newest applied migration."""
        async with self._db.execute("SELECT MAX(version) FROM schema_migrations") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def _episode_count(self, project_id: str) -> int:
        async with self._db.execute(
            "SELECT COUNT(*) FROM episodes WHERE project_id = ?", (project_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    def _project(
        self, row: sqlite3.Row | tuple[object, ...], episode_count: int
    ) -> project_pb2.Project:
        pid, title, kind, logline, description, language, created, updated = row
        return project_pb2.Project(
            name=f"projects/{pid}",
            title=str(title),
            type=int(str(kind)),  # type: ignore[arg-type]
            logline=str(logline),
            description=str(description),
            language=str(language),
            create_time=_timestamp(int(str(created))),
            update_time=_timestamp(int(str(updated))),
            episode_count=episode_count,
        )

    def _episode(self, row: sqlite3.Row | tuple[object, ...]) -> project_pb2.Episode:
        pid, number, title, script, outline, generation, scenes, words, cast, created = row
        return project_pb2.Episode(
            name=f"projects/{pid}/episodes/{number}",
            number=int(str(number)),
            title=str(title),
            script=str(script),
            outline=str(outline),
            generation=str(generation),
            scene_count=int(str(scenes)),
            word_count=int(str(words)),
            cast=json.loads(str(cast)),
            create_time=_timestamp(int(str(created))),
        )

    async def create_project(
        self, project_id: str, project: project_pb2.Project
    ) -> project_pb2.Project:
        now = _now_micros()
        try:
            async with self._transaction() as db:
                await db.execute(
                    f"INSERT INTO projects ({_PROJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        project_id,
                        project.title,
                        int(project.type),
                        project.logline,
                        project.description,
                        project.language,
                        now,
                        now,
                    ),
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(
                f"project 'projects/{project_id}' already exists", reason="PROJECT_EXISTS"
            ) from None
        return await self.get_project(project_id)

    async def get_project(self, project_id: str) -> project_pb2.Project:
        async with self._db.execute(
            f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE id = ?", (project_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise NotFound("project", f"projects/{project_id}", "PROJECT_NOT_FOUND")
        return self._project(row, await self._episode_count(project_id))

    async def list_projects(
        self, limit: int, after: Sequence[str | int] | None
    ) -> tuple[list[project_pb2.Project], list[str | int] | None]:
        if after is None:
            query = (
                f"SELECT {_PROJECT_COLUMNS} FROM projects"
                " ORDER BY create_time DESC, id DESC LIMIT ?"
            )
            params: tuple[object, ...] = (limit + 1,)
        else:
            query = (
                f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE (create_time, id) < (?, ?)"
                " ORDER BY create_time DESC, id DESC LIMIT ?"
            )
            params = (after[0], after[1], limit + 1)
        async with self._db.execute(query, params) as cursor:
            rows = list(await cursor.fetchall())
        page = rows[:limit]
        projects = [self._project(row, await self._episode_count(str(row[0]))) for row in page]
        if len(rows) > limit:
            last = page[-1]
            return projects, [int(str(last[6])), str(last[0])]
        return projects, None

    async def update_project(
        self, project_id: str, changes: project_pb2.Project, paths: Sequence[str]
    ) -> project_pb2.Project:
        assignments = [f"{path} = ?" for path in paths]
        values: list[object] = [
            int(changes.type) if path == "type" else getattr(changes, path) for path in paths
        ]
        async with self._transaction() as db:
            cursor = await db.execute(
                f"UPDATE projects SET {', '.join([*assignments, 'update_time = ?'])} WHERE id = ?",
                (*values, _now_micros(), project_id),
            )
            if cursor.rowcount == 0:
                raise NotFound("project", f"projects/{project_id}", "PROJECT_NOT_FOUND")
        return await self.get_project(project_id)

    async def delete_project(self, project_id: str, *, force: bool) -> None:
        async with self._transaction() as db:
            async with db.execute("SELECT 1 FROM projects WHERE id = ?", (project_id,)) as cursor:
                if await cursor.fetchone() is None:
                    raise NotFound("project", f"projects/{project_id}", "PROJECT_NOT_FOUND")
            if not force and await self._episode_count(project_id):
                raise FailedPrecondition(
                    f"project 'projects/{project_id}' has episodes;"
                    " delete with force to remove them",
                    reason="PROJECT_HAS_EPISODES",
                )
            await db.execute("DELETE FROM projects WHERE id = ?", (project_id,))

    async def create_episode(
        self, project_id: str, episode: project_pb2.Episode
    ) -> project_pb2.Episode:
        now = _now_micros()
        async with self._transaction() as db:
            async with db.execute(
                "UPDATE projects SET next_episode_number = next_episode_number + 1"
                " WHERE id = ? RETURNING next_episode_number - 1",
                (project_id,),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                raise NotFound("project", f"projects/{project_id}", "PROJECT_NOT_FOUND")
            number = int(row[0])
            await db.execute(
                f"INSERT INTO episodes ({_EPISODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    project_id,
                    number,
                    episode.title,
                    episode.script,
                    episode.outline,
                    episode.generation,
                    episode.scene_count,
                    episode.word_count,
                    json.dumps(list(episode.cast), ensure_ascii=False),
                    now,
                ),
            )
        return await self.get_episode(project_id, number)

    async def get_episode(self, project_id: str, number: int) -> project_pb2.Episode:
        async with self._db.execute(
            f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE project_id = ? AND number = ?",
            (project_id, number),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(
                "episode", f"projects/{project_id}/episodes/{number}", "EPISODE_NOT_FOUND"
            )
        return self._episode(row)

    async def list_episodes(
        self, project_id: str, limit: int, after: Sequence[str | int] | None
    ) -> tuple[list[project_pb2.Episode], list[str | int] | None]:
        await self.get_project(project_id)
        after_number = int(after[0]) if after else 0
        async with self._db.execute(
            f"SELECT {_EPISODE_SUMMARY_COLUMNS} FROM episodes WHERE project_id = ? AND number > ?"
            " ORDER BY number LIMIT ?",
            (project_id, after_number, limit + 1),
        ) as cursor:
            rows = list(await cursor.fetchall())
        episodes = [self._episode(row) for row in rows[:limit]]
        if len(rows) > limit:
            return episodes, [episodes[-1].number]
        return episodes, None

    async def delete_episode(self, project_id: str, number: int) -> None:
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM episodes WHERE project_id = ? AND number = ?", (project_id, number)
            )
            if cursor.rowcount == 0:
                raise NotFound(
                    "episode", f"projects/{project_id}/episodes/{number}", "EPISODE_NOT_FOUND"
                )
