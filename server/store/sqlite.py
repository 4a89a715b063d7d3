"""The SQLite project store: WAL mode, versioned migrations, atomic episode numbers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from scriptgen.v1 import project_pb2

from server.auth.guard import tenant_in_scope
from server.auth.records import DEFAULT_TENANT
from server.shared_reads import SharedReads
from server.storage_faults import is_lock_conflict, sqlite_faults
from server.store import records
from server.store.migrations import migrations, statements
from server.store.sqlite_keys import SqliteKeys

log = logging.getLogger(__name__)

_PROJECT_COLUMNS = (
    "id, title, type, logline, description, language, create_time, update_time,"
    " audience, tone, target_episode_minutes, status"
)
_PROJECT_SELECT = (
    f"SELECT {_PROJECT_COLUMNS},"
    " (SELECT COUNT(*) FROM episodes"
    " WHERE episodes.tenant = projects.tenant AND episodes.project_id = projects.id)"
    " FROM projects"
)
_EPISODE_SUMMARY_COLUMNS = (
    "project_id, number, title, '' AS script, '' AS outline, generation,"
    " scene_count, word_count, cast_json, create_time, character_count, usage_json,"
    " '{}' AS prompt_snapshot_json, quality_json, update_time"
)
# The latest episodes with their outlines, and one row of NULLs for a project without any
# (no row: no project), so one query also says whether the project exists.
_LATEST_EPISODES = (
    "SELECT e.project_id, e.number, e.title, '', e.outline, e.generation,"
    " e.scene_count, e.word_count, e.cast_json, e.create_time, e.character_count, e.usage_json,"
    " '{}', e.quality_json, e.update_time"
    " FROM projects AS p LEFT JOIN episodes AS e ON e.tenant = p.tenant AND e.project_id = p.id"
    " WHERE p.tenant = ? AND p.id = ? ORDER BY e.number DESC LIMIT ?"
)
_EPISODE_COLUMNS = (
    "project_id, number, title, script, outline, generation,"
    " scene_count, word_count, cast_json, create_time, character_count, usage_json,"
    " prompt_snapshot_json, quality_json, update_time"
)


def _project(row: sqlite3.Row | tuple[Any, ...]) -> project_pb2.Project:
    (pid, title, kind, logline, description, language, created, updated) = row[:8]
    audience, tone, minutes, status, episode_count = row[8:]
    return records.project(
        project_id=str(pid),
        title=str(title),
        kind=int(kind),
        logline=str(logline),
        description=str(description),
        language=str(language),
        create_time=int(created),
        update_time=int(updated),
        episode_count=int(episode_count),
        audience=str(audience),
        tone=str(tone),
        target_episode_minutes=int(minutes),
        status=int(status),
    )


def _episode(row: sqlite3.Row | tuple[Any, ...]) -> project_pb2.Episode:
    pid, number, title, script, outline, generation, scenes, words, cast, created = row[:10]
    characters, usage, snapshot, quality, updated = row[10:]
    return records.episode(
        project_id=str(pid),
        number=int(number),
        title=str(title),
        script=str(script),
        outline=str(outline),
        generation=str(generation),
        scene_count=int(scenes),
        word_count=int(words),
        cast_json=str(cast),
        create_time=int(created),
        character_count=int(characters),
        usage_json=str(usage),
        prompt_snapshot_json=str(snapshot),
        quality_json=str(quality),
        update_time=int(updated),
    )


BUSY_TIMEOUT_SECONDS = 5.0
"""How long a statement waits for another connection's lock before failing."""
LOCKED_REFUSAL_SECONDS = 2.0
"""For this long after a write found the database locked (having waited its busy timeout),
writes wait only LOCKED_WAIT_SECONDS for the lock: refused almost at once while it is held,
instead of each queued write waiting its own timeout in turn (5, 10, 15 s … for concurrent
callers). Each refusal extends it; the first write that gets the lock ends it."""
LOCKED_WAIT_SECONDS = 0.1
"""A write's wait for the lock while the database was just found locked: long enough for
another process's ordinary write to end, short enough that queued writes are answered fast."""


async def _set_busy_timeout(connection: aiosqlite.Connection, seconds: float) -> None:
    """How long the connection's statements wait for another connection's lock."""
    await connection.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")


async def _prepare(connection: aiosqlite.Connection) -> None:
    """Set the connection's pragmas; WAL mode is retried while another opener holds the file.

    Switching to WAL takes an exclusive lock, and SQLite answers SQLITE_BUSY at
    once instead of calling the busy handler when it sees a possible deadlock,
    which happens when several cores open a new file together.
    """
    await _set_busy_timeout(connection, BUSY_TIMEOUT_SECONDS)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_TIMEOUT_SECONDS
    delay = 0.005
    while True:
        try:
            await connection.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as error:
            if not is_lock_conflict(error) or loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
    await connection.execute("PRAGMA synchronous=NORMAL")
    await connection.execute("PRAGMA foreign_keys=ON")


async def _read_only(path: Path) -> aiosqlite.Connection:
    """A query-only connection to the store's file (already WAL and migrated)."""
    connection = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
    try:
        await _set_busy_timeout(connection, BUSY_TIMEOUT_SECONDS)
        await connection.execute("PRAGMA query_only=1")
    except BaseException:
        await connection.close()
        raise
    return connection


async def _begin_to_the_end(db: aiosqlite.Connection) -> None:
    """BEGIN IMMEDIATE, and on a cancellation its outcome undone: the statement runs on the
    connection's thread whatever becomes of the caller, and a transaction begun for a caller
    that left would hold the write lock with nobody to end it."""
    begin = asyncio.ensure_future(db.execute("BEGIN IMMEDIATE"))
    try:
        await asyncio.shield(begin)
    except asyncio.CancelledError:
        await asyncio.wait((begin,))
        if not begin.cancelled() and begin.exception() is None and db.in_transaction:
            await db.execute("ROLLBACK")
        raise


class SqliteProjectStore(SqliteKeys):
    """Projects and episodes (and API keys, tenants) in one SQLite file.

    A project's key is (tenant, id): every call is for one tenant's projects
    (another tenant's is NOT_FOUND, like a missing one, and may use the same
    id); `tenant=None` is the tenant in scope (`server.auth.guard.tenant_in_scope`).
    """

    def __init__(
        self, path: Path, *, request_id_ttl_seconds: float = records.REQUEST_ID_TTL_SECONDS
    ) -> None:
        self._path = path
        self._request_id_ttl_micros = int(request_id_ttl_seconds * 1_000_000)
        self._connection: aiosqlite.Connection | None = None
        # One connection is shared by every coroutine, so each use of it holds
        # this lock: a read that interleaved with another coroutine's BEGIN
        # IMMEDIATE would turn it into a lock upgrade that SQLite refuses
        # (SQLITE_BUSY, without waiting) once another process has written.
        self._lock = asyncio.Lock()
        #: Reads go through a query-only connection of their own, without the lock: each
        #: read is one statement, and WAL gives it the last committed state. Behind the
        #: lock a burst of job starts took turns, each turn a round trip through a busy
        #: loop; on their own connection the reads queue on its thread back to back.
        self._reader: aiosqlite.Connection | None = None
        #: Concurrent reads of one project, or of its latest episodes, share one read (none
        #: across a write). Keys: (tenant, project) and (tenant, project, count).
        self._project_reads: SharedReads[tuple[str | int, ...], list[Any]] = SharedReads()
        #: Until when (time.monotonic) writes wait only briefly for the write lock, which
        #: another process was just found holding (LOCKED_REFUSAL_SECONDS).
        self._locked_until = float("-inf")

    @property
    def _db(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise records.store_unavailable("is not open")
        return self._connection

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._locked_until = float("-inf")
        connection = await aiosqlite.connect(
            self._path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS
        )
        try:
            await _prepare(connection)
            self._connection = connection
            await self._migrate()
            self._reader = await _read_only(self._path)
        except BaseException:
            # A half-opened store must not leave its connection's worker thread
            # behind: it would keep the process from exiting.
            self._connection = None
            await connection.close()
            raise

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def ping(self) -> None:
        """Whether the store answers: a read of the database file on the read connection, so
        that the ping never waits behind writes queued for the write lock (each up to the busy
        timeout, which the health probe's own timeout took for a dead store). The write lock
        is probed apart (`server.storage_probes.SqliteWriteProbe`)."""
        try:
            await self._read("SELECT version FROM schema_migrations LIMIT 1", ())
        except (sqlite3.Error, ValueError) as error:  # ValueError: aiosqlite's closed connection
            raise records.store_unavailable(f"failed: {error}") from None

    async def _read(self, query: str, parameters: tuple[Any, ...]) -> list[Any]:
        """The rows of one query, on the read connection.

        Executed, fetched and finished in one trip to the connection's thread, so no
        statement stays open between trips: an open one would hold its read
        transaction, and the next read would see that older state instead of
        what was committed since.
        """
        if self._reader is None:
            raise records.store_unavailable("is not open")
        async with sqlite_faults():
            return list(await self._reader.execute_fetchall(query, parameters))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock, sqlite_faults():
            # Reads of projects in flight are not shared across a write (SharedReads).
            with self._project_reads.writing():
                await self._begin_immediate()
                try:
                    yield self._db
                    await self._db.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (disk full) leaves the transaction open; SQLite may
                    # also have rolled it back already.
                    if self._db.in_transaction:
                        await self._db.execute("ROLLBACK")
                    raise

    async def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE: it takes the write lock up front, so a read inside the transaction
        stays true until COMMIT, across processes too. With a short wait for the lock while
        the database was just found locked (LOCKED_REFUSAL_SECONDS)."""
        db = self._db
        refusing = time.monotonic() < self._locked_until
        try:
            if refusing:
                await _set_busy_timeout(db, LOCKED_WAIT_SECONDS)
            await _begin_to_the_end(db)
        except sqlite3.Error as error:
            if is_lock_conflict(error):
                self._locked_until = time.monotonic() + LOCKED_REFUSAL_SECONDS
            raise
        else:
            self._locked_until = float("-inf")
        finally:
            # Reached on a cancellation too: statements already sent run on the connection's
            # thread regardless, and this one runs after them.
            if refusing:
                try:
                    await _set_busy_timeout(db, BUSY_TIMEOUT_SECONDS)
                except (sqlite3.Error, ValueError) as error:
                    log.warning("could not restore the store's busy timeout: %s", error)

    async def _migrate(self) -> None:
        async with self._transaction() as db:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_time INTEGER NOT NULL)"
            )
            async with db.execute("SELECT version FROM schema_migrations") as cursor:
                applied = {row[0] for row in await cursor.fetchall()}
            for migration in migrations("sqlite"):
                if migration.version in applied:
                    continue
                # executescript would COMMIT our transaction; run statement by statement.
                for statement in statements(migration.sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_time) VALUES (?, ?, ?)",
                    (migration.version, migration.name, records.now_micros()),
                )

    async def schema_version(self) -> int:
        """The newest applied migration."""
        rows = await self._read("SELECT MAX(version) FROM schema_migrations", ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def create_project(
        self,
        project_id: str,
        project: project_pb2.Project,
        *,
        request_id: str = "",
        fingerprint: str = "",
        tenant: str = DEFAULT_TENANT,
    ) -> project_pb2.Project:
        now = records.now_micros()
        async with self._transaction() as db:
            earlier = (
                await self._claim_request_id(
                    db,
                    records.tenant_request_id(tenant, request_id),
                    fingerprint,
                    project_id,
                    now,
                    tenant,
                )
                if request_id
                else None
            )
            if earlier is None:
                try:
                    await db.execute(
                        f"INSERT INTO projects ({_PROJECT_COLUMNS}, tenant)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            project_id,
                            project.title,
                            int(project.type),
                            project.logline,
                            project.description,
                            project.language,
                            now,
                            now,
                            project.audience,
                            project.tone,
                            project.target_episode_minutes,
                            int(project.status or project_pb2.PROJECT_STATUS_ACTIVE),
                            tenant,
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise records.project_exists(project_id) from None
        return await self.get_project(earlier or project_id, tenant=tenant)

    async def _claim_request_id(
        self,
        db: aiosqlite.Connection,
        request_id: str,
        fingerprint: str,
        project_id: str,
        now: int,
        tenant: str,
    ) -> str | None:
        """Record `request_id` for `project_id`; or the project it already names, if kept."""
        await db.execute(
            "DELETE FROM project_request_ids WHERE create_time <= ?",
            (now - self._request_id_ttl_micros,),
        )
        async with db.execute(
            "SELECT fingerprint, project_id FROM project_request_ids WHERE request_id = ?",
            (request_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            await db.execute(
                "INSERT INTO project_request_ids"
                " (request_id, fingerprint, project_id, create_time, tenant)"
                " VALUES (?, ?, ?, ?, ?)",
                (request_id, fingerprint, project_id, now, tenant),
            )
            return None
        if str(row[0]) != fingerprint:
            raise records.request_id_reused(request_id)
        return str(row[1])

    async def get_project(
        self, project_id: str, *, tenant: str | None = None
    ) -> project_pb2.Project:
        # Every job start reads its project, so a burst of starts on a few projects shares
        # a few reads (SharedReads; SQLite is one core's, the sole writer), each one trip to
        # the reader's thread (execute, fetch and close as one).
        key = (tenant_in_scope(tenant), project_id)
        found = await self._project_reads.read(key, lambda: self._read_project(key))
        if not found:
            raise records.project_not_found(project_id)
        # A copy per caller: the shared message is read-only, the copy is the caller's
        # (a copy costs a tenth of building the message from its row).
        project = project_pb2.Project()
        project.CopyFrom(found[0])
        return project

    async def _read_project(self, key: tuple[str, str]) -> list[Any]:
        """The project of `key` as a message (none when there is no such row), built once
        for every caller sharing the read."""
        rows = await self._read(f"{_PROJECT_SELECT} WHERE tenant = ? AND id = ?", key)
        return [_project(row) for row in rows]

    async def first_owner(self, project_id: str) -> str | None:
        rows = await self._read(
            "SELECT tenant FROM projects WHERE id = ? ORDER BY create_time, tenant LIMIT 1",
            (project_id,),
        )
        return str(rows[0][0]) if rows else None

    async def list_projects(
        self, limit: int, after: Sequence[str | int] | None, *, tenant: str | None = None
    ) -> tuple[list[project_pb2.Project], list[str | int] | None]:
        where = "tenant = ?"
        params: tuple[object, ...] = (tenant_in_scope(tenant),)
        if after is not None:
            where, params = f"{where} AND (create_time, id) < (?, ?)", (*params, after[0], after[1])
        query = f"{_PROJECT_SELECT} WHERE {where} ORDER BY create_time DESC, id DESC LIMIT ?"
        params = (*params, limit + 1)
        rows = await self._read(query, params)
        page = rows[:limit]
        projects = [_project(row) for row in page]
        if len(rows) > limit:
            last = page[-1]
            return projects, [int(last[6]), str(last[0])]
        return projects, None

    async def update_project(
        self,
        project_id: str,
        changes: project_pb2.Project,
        paths: Sequence[str],
        *,
        tenant: str | None = None,
    ) -> project_pb2.Project:
        assignments = [f"{path} = ?" for path in paths]
        values: list[object] = [
            int(getattr(changes, path)) if path in ("type", "status") else getattr(changes, path)
            for path in paths
        ]
        tenant = tenant_in_scope(tenant)
        async with self._transaction() as db:
            cursor = await db.execute(
                f"UPDATE projects SET {', '.join([*assignments, 'update_time = ?'])}"
                " WHERE tenant = ? AND id = ?",
                (*values, records.now_micros(), tenant, project_id),
            )
            if cursor.rowcount == 0:
                raise records.project_not_found(project_id)
        return await self.get_project(project_id, tenant=tenant)

    async def delete_project(
        self, project_id: str, *, force: bool, tenant: str | None = None
    ) -> None:
        key = (tenant_in_scope(tenant), project_id)
        async with self._transaction() as db:
            async with db.execute(
                "SELECT 1 FROM projects WHERE tenant = ? AND id = ?", key
            ) as cursor:
                if await cursor.fetchone() is None:
                    raise records.project_not_found(project_id)
            async with db.execute(
                "SELECT 1 FROM episodes WHERE tenant = ? AND project_id = ? LIMIT 1", key
            ) as cursor:
                has_episodes = await cursor.fetchone() is not None
            if has_episodes and not force:
                raise records.project_has_episodes(project_id)
            await db.execute("DELETE FROM projects WHERE tenant = ? AND id = ?", key)

    async def create_episode(
        self, project_id: str, episode: project_pb2.Episode, *, tenant: str | None = None
    ) -> project_pb2.Episode:
        now = records.now_micros()
        tenant = tenant_in_scope(tenant)
        # Four trips to the connection's thread under the lock (BEGIN, number, row, COMMIT),
        # and the stored row comes back with the INSERT: a save waits for the lock behind
        # every other save, and each trip also waits for a turn of a busy event loop.
        async with self._transaction() as db:
            numbered = list(
                await db.execute_fetchall(
                    "UPDATE projects SET next_episode_number = next_episode_number + 1"
                    " WHERE tenant = ? AND id = ? RETURNING next_episode_number - 1",
                    (tenant, project_id),
                )
            )
            if not numbered:
                raise records.project_not_found(project_id)
            number = int(numbered[0][0])
            stored = await db.execute_fetchall(
                f"INSERT INTO episodes ({_EPISODE_COLUMNS}, tenant)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                f" RETURNING {_EPISODE_COLUMNS}",
                (
                    project_id,
                    number,
                    episode.title,
                    episode.script,
                    episode.outline,
                    episode.generation,
                    episode.scene_count,
                    episode.word_count,
                    records.cast_json(episode),
                    now,
                    episode.character_count,
                    records.usage_json(episode),
                    records.prompt_snapshot_json(episode),
                    records.quality_json(episode),
                    now,
                    tenant,
                ),
            )
        return _episode(next(iter(stored)))

    async def get_episode(
        self, project_id: str, number: int, *, tenant: str | None = None
    ) -> project_pb2.Episode:
        rows = await self._read(
            f"SELECT {_EPISODE_COLUMNS} FROM episodes"
            " WHERE tenant = ? AND project_id = ? AND number = ?",
            (tenant_in_scope(tenant), project_id, number),
        )
        if not rows:
            raise records.episode_not_found(project_id, number)
        return _episode(rows[0])

    async def list_episodes(
        self,
        project_id: str,
        limit: int,
        after: Sequence[str | int] | None,
        *,
        tenant: str | None = None,
    ) -> tuple[list[project_pb2.Episode], list[str | int] | None]:
        tenant = tenant_in_scope(tenant)
        await self.get_project(project_id, tenant=tenant)
        after_number = int(after[0]) if after else 0
        rows = await self._read(
            f"SELECT {_EPISODE_SUMMARY_COLUMNS} FROM episodes"
            " WHERE tenant = ? AND project_id = ? AND number > ? ORDER BY number LIMIT ?",
            (tenant, project_id, after_number, limit + 1),
        )
        episodes = [_episode(row) for row in rows[:limit]]
        if len(rows) > limit:
            return episodes, [episodes[-1].number]
        return episodes, None

    async def latest_episodes(
        self, project_id: str, count: int, *, tenant: str | None = None
    ) -> list[project_pb2.Episode]:
        # Every job's plan stage reads these: a burst of jobs on a few projects shares a few
        # reads, as their starts share the project's (get_project). Each read alone is a
        # trip to the reader's thread, which must win the GIL from a busy loop: in a burst
        # of 200 such trips the last plan stages waited ~80 ms for theirs.
        key = (tenant_in_scope(tenant), project_id, max(1, count))
        rows = await self._project_reads.read(key, lambda: self._read(_LATEST_EPISODES, key))
        if not rows:
            raise records.project_not_found(project_id)
        found = [_episode(row) for row in rows if row[1] is not None]
        return list(reversed(found[: max(0, count)]))

    async def delete_episode(
        self, project_id: str, number: int, *, tenant: str | None = None
    ) -> None:
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM episodes WHERE tenant = ? AND project_id = ? AND number = ?",
                (tenant_in_scope(tenant), project_id, number),
            )
            if cursor.rowcount == 0:
                raise records.episode_not_found(project_id, number)
