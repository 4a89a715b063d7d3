"""The PostgreSQL project store: a connection pool, versioned migrations, atomic episode numbers.

Several cores share one database. Episode numbers come from an UPDATE of the
project's row whose lock lasts until the episode is saved, so no two cores hand
out one number; migrations run under an advisory lock, so cores starting
together apply each step once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from scriptgen.v1 import project_pb2

from server.auth.guard import tenant_in_scope
from server.auth.records import DEFAULT_TENANT
from server.store import records
from server.store.base import UPDATABLE_PROJECT_FIELDS
from server.store.migrations import migrations
from server.store.postgres_keys import PostgresKeys

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]

#: pg_advisory_xact_lock key held while migrating ("scriptgen" in ASCII, as a bigint).
_MIGRATION_LOCK = 0x73_63_72_69_70_74_67_65
#: Errors that mean the database cannot be reached or cannot serve now.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
_PROJECT_COLUMNS = (
    "id, title, type, logline, description, language, create_time, update_time,"
    " audience, tone, target_episode_minutes, status"
)
_PROJECT_SELECT = (
    f"SELECT {_PROJECT_COLUMNS},"
    " (SELECT COUNT(*) FROM episodes"
    " WHERE episodes.tenant = projects.tenant AND episodes.project_id = projects.id)"
    " AS episode_count"
    " FROM projects"
)
_EPISODE_COLUMNS = (
    "project_id, number, title, script, outline, generation,"
    " scene_count, word_count, cast_json, create_time, character_count, usage_json,"
    " prompt_snapshot_json, quality_json, update_time"
)
# The latest episodes with their outlines, and one row of NULLs for a project without any
# (no row: no project), so one query also says whether the project exists.
_LATEST_EPISODES = (
    "SELECT e.project_id, e.number, e.title, '' AS script, e.outline, e.generation,"
    " e.scene_count, e.word_count, e.cast_json, e.create_time, e.character_count, e.usage_json,"
    " '{}' AS prompt_snapshot_json, e.quality_json, e.update_time"
    " FROM projects AS p LEFT JOIN episodes AS e ON e.tenant = p.tenant AND e.project_id = p.id"
    " WHERE p.tenant = $1 AND p.id = $2 ORDER BY e.number DESC LIMIT $3"
)
_EPISODE_SUMMARY_COLUMNS = (
    "project_id, number, title, '' AS script, '' AS outline, generation,"
    " scene_count, word_count, cast_json, create_time, character_count, usage_json,"
    " '{}' AS prompt_snapshot_json, quality_json, update_time"
)


def redact(url: str) -> str:
    """`url` without its passwords, for messages and logs: the user part's, and
    `password` (or `sslpassword`) in the query string, which libpq and asyncpg read too."""
    from urllib.parse import unquote

    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        pairs = parts.query.split("&")
        for index, pair in enumerate(pairs):
            name, equals, _ = pair.partition("=")
            if equals and unquote(name).strip().lower() in {"password", "sslpassword"}:
                pairs[index] = f"{name}=***"
        parts = parts._replace(query="&".join(pairs))
    return urlunsplit(parts)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _project(row: asyncpg.Record) -> project_pb2.Project:
    return records.project(
        project_id=row["id"],
        title=row["title"],
        kind=row["type"],
        logline=row["logline"],
        description=row["description"],
        language=row["language"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        episode_count=row["episode_count"],
        audience=row["audience"],
        tone=row["tone"],
        target_episode_minutes=row["target_episode_minutes"],
        status=row["status"],
    )


def _episode(row: asyncpg.Record) -> project_pb2.Episode:
    return records.episode(
        project_id=row["project_id"],
        number=row["number"],
        title=row["title"],
        script=row["script"],
        outline=row["outline"],
        generation=row["generation"],
        scene_count=row["scene_count"],
        word_count=row["word_count"],
        cast_json=row["cast_json"],
        create_time=row["create_time"],
        character_count=row["character_count"],
        usage_json=row["usage_json"],
        prompt_snapshot_json=row["prompt_snapshot_json"],
        quality_json=row["quality_json"],
        update_time=row["update_time"],
    )


class PostgresProjectStore(PostgresKeys):
    """Projects and episodes (and API keys, tenants) in PostgreSQL, shared by every core.

    A project's key is (tenant, id): every call is for one tenant's projects
    (another tenant's is NOT_FOUND, like a missing one, and may use the same
    id); `tenant=None` is the tenant in scope (`server.auth.guard.tenant_in_scope`).
    """

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout_seconds: float = 10.0,
        request_id_ttl_seconds: float = records.REQUEST_ID_TTL_SECONDS,
    ) -> None:
        self._url = url
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._timeout = timeout_seconds
        self._request_id_ttl_micros = int(request_id_ttl_seconds * 1_000_000)
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    def __repr__(self) -> str:
        return f"PostgresProjectStore({redact(self._url)!r})"

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=self._min_connections,
                max_size=self._max_connections,
                timeout=self._timeout,
                command_timeout=self._timeout,
            )
        except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError) as error:
            # Unreachable, or refused (bad password, no such database): either way, not serving.
            raise records.store_unavailable(
                f"cannot reach PostgreSQL at {redact(self._url)}: {_describe(error)}"
            ) from None
        await self._migrate()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            async with asyncio.timeout(self._timeout):
                await pool.close()
        except TimeoutError:
            pool.terminate()

    async def ping(self) -> None:
        async with self._connection() as db:
            await db.fetchval("SELECT 1")

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; losing the database turns into Unavailable."""
        pool = self._pool
        if pool is None:
            raise records.store_unavailable("is not open")
        try:
            db = await pool.acquire(timeout=self._timeout)
        except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError) as error:
            # Whatever stops a connection (down, refused, database gone) stops serving.
            raise records.store_unavailable(f"cannot connect: {_describe(error)}") from None
        try:
            yield db
        except _UNREACHABLE as error:
            raise records.store_unavailable(f"failed: {_describe(error)}") from None
        finally:
            await pool.release(db)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        async with self._connection() as db, db.transaction():
            yield db

    async def _migrate(self) -> None:
        async with self._transaction() as db:
            # Cores starting together wait here; the first applies, the rest find it done.
            await db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_time BIGINT NOT NULL)"
            )
            applied = {
                row["version"] for row in await db.fetch("SELECT version FROM schema_migrations")
            }
            for migration in migrations("postgres"):
                if migration.version in applied:
                    continue
                await db.execute(migration.sql)
                await db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_time)"
                    " VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    records.now_micros(),
                )

    async def schema_version(self) -> int:
        """The newest applied migration."""
        async with self._connection() as db:
            version = await db.fetchval("SELECT MAX(version) FROM schema_migrations")
        return int(version or 0)

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
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
                    )
                except asyncpg.UniqueViolationError:
                    raise records.project_exists(project_id) from None
        return await self.get_project(earlier or project_id, tenant=tenant)

    async def _claim_request_id(
        self,
        db: Connection,
        request_id: str,
        fingerprint: str,
        project_id: str,
        now: int,
        tenant: str,
    ) -> str | None:
        """Record `request_id` for `project_id`; or the project it already names, if kept."""
        cutoff = now - self._request_id_ttl_micros
        await db.execute(
            "DELETE FROM project_request_ids WHERE request_id = $1 AND create_time <= $2",
            request_id,
            cutoff,
        )
        # Tidy a few other expired keys; SKIP LOCKED so concurrent tidying never deadlocks.
        await db.execute(
            "DELETE FROM project_request_ids WHERE request_id IN (SELECT request_id"
            " FROM project_request_ids WHERE create_time <= $1 LIMIT 100 FOR UPDATE SKIP LOCKED)",
            cutoff,
        )
        # A racing insert of the same key makes this wait for that transaction:
        # if it commits, we get its row below; if it rolls back, ours goes in.
        claimed = await db.fetchval(
            "INSERT INTO project_request_ids"
            " (request_id, fingerprint, project_id, create_time, tenant)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO NOTHING RETURNING project_id",
            request_id,
            fingerprint,
            project_id,
            now,
            tenant,
        )
        if claimed is not None:
            return None
        row = await db.fetchrow(
            "SELECT fingerprint, project_id FROM project_request_ids WHERE request_id = $1",
            request_id,
        )
        if row is None:
            # Only a key expiring between two statements gets here; the retry is clean.
            raise records.store_unavailable("lost a race for a request_id; retry")
        if row["fingerprint"] != fingerprint:
            raise records.request_id_reused(request_id)
        return str(row["project_id"])

    async def get_project(
        self, project_id: str, *, tenant: str | None = None
    ) -> project_pb2.Project:
        async with self._connection() as db:
            row = await db.fetchrow(
                f"{_PROJECT_SELECT} WHERE tenant = $1 AND id = $2",
                tenant_in_scope(tenant),
                project_id,
            )
        if row is None:
            raise records.project_not_found(project_id)
        return _project(row)

    async def first_owner(self, project_id: str) -> str | None:
        async with self._connection() as db:
            tenant = await db.fetchval(
                "SELECT tenant FROM projects WHERE id = $1 ORDER BY create_time, tenant LIMIT 1",
                project_id,
            )
        return None if tenant is None else str(tenant)

    async def list_projects(
        self, limit: int, after: Sequence[str | int] | None, *, tenant: str | None = None
    ) -> tuple[list[project_pb2.Project], list[str | int] | None]:
        where = "tenant = $1"
        params: tuple[object, ...] = (tenant_in_scope(tenant),)
        if after is not None:
            where = f"{where} AND (create_time, id) < ($2, $3)"
            params = (*params, int(after[0]), str(after[1]))
        async with self._connection() as db:
            rows = await db.fetch(
                f"{_PROJECT_SELECT} WHERE {where}"
                f" ORDER BY create_time DESC, id DESC LIMIT ${len(params) + 1}",
                *params,
                limit + 1,
            )
        page = rows[:limit]
        projects = [_project(row) for row in page]
        if len(rows) > limit:
            last = page[-1]
            return projects, [int(last["create_time"]), str(last["id"])]
        return projects, None

    async def update_project(
        self,
        project_id: str,
        changes: project_pb2.Project,
        paths: Sequence[str],
        *,
        tenant: str | None = None,
    ) -> project_pb2.Project:
        unknown = [path for path in paths if path not in UPDATABLE_PROJECT_FIELDS]
        if unknown:
            raise ValueError(f"not updatable: {unknown}")
        values: list[object] = [
            int(getattr(changes, path)) if path in ("type", "status") else getattr(changes, path)
            for path in paths
        ]
        assignments = [f"{path} = ${index}" for index, path in enumerate(paths, start=1)]
        assignments.append(f"update_time = ${len(paths) + 1}")
        tenant = tenant_in_scope(tenant)
        async with self._connection() as db:
            status = await db.execute(
                f"UPDATE projects SET {', '.join(assignments)}"
                f" WHERE tenant = ${len(paths) + 2} AND id = ${len(paths) + 3}",
                *values,
                records.now_micros(),
                tenant,
                project_id,
            )
        if status == "UPDATE 0":
            raise records.project_not_found(project_id)
        return await self.get_project(project_id, tenant=tenant)

    async def delete_project(
        self, project_id: str, *, force: bool, tenant: str | None = None
    ) -> None:
        key = (tenant_in_scope(tenant), project_id)
        async with self._transaction() as db:
            # The row lock orders this against episodes being saved into the project.
            found = await db.fetchval(
                "SELECT 1 FROM projects WHERE tenant = $1 AND id = $2 FOR UPDATE", *key
            )
            if found is None:
                raise records.project_not_found(project_id)
            if not force and await db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM episodes WHERE tenant = $1 AND project_id = $2)",
                *key,
            ):
                raise records.project_has_episodes(project_id)
            await db.execute("DELETE FROM projects WHERE tenant = $1 AND id = $2", *key)

    async def create_episode(
        self, project_id: str, episode: project_pb2.Episode, *, tenant: str | None = None
    ) -> project_pb2.Episode:
        tenant = tenant_in_scope(tenant)
        async with self._transaction() as db:
            # The row lock taken here is held until COMMIT: a concurrent save in
            # any core waits, then reads the incremented counter.
            number = await db.fetchval(
                "UPDATE projects SET next_episode_number = next_episode_number + 1"
                " WHERE tenant = $1 AND id = $2 RETURNING next_episode_number - 1",
                tenant,
                project_id,
            )
            if number is None:
                raise records.project_not_found(project_id)
            row = await db.fetchrow(
                f"INSERT INTO episodes ({_EPISODE_COLUMNS}, tenant) VALUES ($1, $2, $3, $4, $5,"
                f" $6, $7, $8, $9, $10, $11, $12, $13, $14, $10, $15) RETURNING {_EPISODE_COLUMNS}",
                project_id,
                int(number),
                episode.title,
                episode.script,
                episode.outline,
                episode.generation,
                episode.scene_count,
                episode.word_count,
                records.cast_json(episode),
                records.now_micros(),
                episode.character_count,
                records.usage_json(episode),
                records.prompt_snapshot_json(episode),
                records.quality_json(episode),
                tenant,
            )
        assert row is not None  # INSERT … RETURNING always answers its row
        return _episode(row)

    async def get_episode(
        self, project_id: str, number: int, *, tenant: str | None = None
    ) -> project_pb2.Episode:
        async with self._connection() as db:
            row = await db.fetchrow(
                f"SELECT {_EPISODE_COLUMNS} FROM episodes"
                " WHERE tenant = $1 AND project_id = $2 AND number = $3",
                tenant_in_scope(tenant),
                project_id,
                number,
            )
        if row is None:
            raise records.episode_not_found(project_id, number)
        return _episode(row)

    async def latest_episodes(
        self, project_id: str, count: int, *, tenant: str | None = None
    ) -> list[project_pb2.Episode]:
        async with self._connection() as db:
            rows = await db.fetch(
                _LATEST_EPISODES, tenant_in_scope(tenant), project_id, max(1, count)
            )
        if not rows:
            raise records.project_not_found(project_id)
        found = [_episode(row) for row in rows if row["number"] is not None]
        return list(reversed(found[: max(0, count)]))

    async def list_episodes(
        self,
        project_id: str,
        limit: int,
        after: Sequence[str | int] | None,
        *,
        tenant: str | None = None,
    ) -> tuple[list[project_pb2.Episode], list[str | int] | None]:
        after_number = int(after[0]) if after else 0
        tenant = tenant_in_scope(tenant)
        async with self._connection() as db:
            if (
                await db.fetchval(
                    "SELECT 1 FROM projects WHERE tenant = $1 AND id = $2", tenant, project_id
                )
                is None
            ):
                raise records.project_not_found(project_id)
            rows = await db.fetch(
                f"SELECT {_EPISODE_SUMMARY_COLUMNS} FROM episodes"
                " WHERE tenant = $1 AND project_id = $2 AND number > $3 ORDER BY number LIMIT $4",
                tenant,
                project_id,
                after_number,
                limit + 1,
            )
        episodes = [_episode(row) for row in rows[:limit]]
        if len(rows) > limit:
            return episodes, [episodes[-1].number]
        return episodes, None

    async def delete_episode(
        self, project_id: str, number: int, *, tenant: str | None = None
    ) -> None:
        async with self._connection() as db:
            status = await db.execute(
                "DELETE FROM episodes WHERE tenant = $1 AND project_id = $2 AND number = $3",
                tenant_in_scope(tenant),
                project_id,
                number,
            )
        if status == "DELETE 0":
            raise records.episode_not_found(project_id, number)
