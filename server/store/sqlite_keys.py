"""API keys, tenant limits and shared secrets in the SQLite project store (mixed into it)."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiosqlite

from server.auth.records import ApiKey, TenantLimits
from server.store import records

_KEY_COLUMNS = "id, tenant, scopes, secret_sha256, description, create_time, revoke_time"


def _key(row: sqlite3.Row | tuple[Any, ...]) -> ApiKey:
    key_id, tenant, scopes, digest, description, created, revoked = row
    return ApiKey(
        key_id=str(key_id),
        tenant=str(tenant),
        scopes=tuple(s for s in str(scopes).split(",") if s),
        secret_sha256=str(digest),
        description=str(description),
        create_time=int(created),
        revoke_time=int(revoked),
    )


class SqliteKeys:
    """The KeyStore half of SqliteProjectStore."""

    async def _read(self, query: str, parameters: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    async def create_key(self, key: ApiKey) -> None:
        now = key.create_time or records.now_micros()
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO tenants (id, create_time) VALUES (?, ?)", (key.tenant, now)
            )
            await db.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0)",
                (
                    key.key_id,
                    key.tenant,
                    ",".join(key.scopes),
                    key.secret_sha256,
                    key.description,
                    now,
                ),
            )

    async def get_key(self, key_id: str) -> ApiKey | None:
        rows = await self._read(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    async def list_keys(self, tenant: str = "") -> list[ApiKey]:
        query = f"SELECT {_KEY_COLUMNS} FROM api_keys"
        params: tuple[str, ...] = ()
        if tenant:
            query += " WHERE tenant = ?"
            params = (tenant,)
        return [_key(row) for row in await self._read(f"{query} ORDER BY create_time, id", params)]

    async def revoke_key(self, key_id: str) -> bool:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE api_keys SET revoke_time = ? WHERE id = ? AND revoke_time = 0",
                (records.now_micros(), key_id),
            )
            async with db.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)) as cursor:
                return await cursor.fetchone() is not None

    async def get_tenant_limits(self, tenant: str) -> TenantLimits:
        rows = await self._read(
            "SELECT requests_per_window, window_seconds, max_streams, daily_tokens"
            " FROM tenants WHERE id = ?",
            (tenant,),
        )
        if not rows:
            return TenantLimits(tenant)
        row = rows[0]
        return TenantLimits(tenant, int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    async def set_tenant_limits(self, limits: TenantLimits) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO tenants (id, requests_per_window, window_seconds, max_streams,"
                " daily_tokens, create_time) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET"
                " requests_per_window = excluded.requests_per_window,"
                " window_seconds = excluded.window_seconds, max_streams = excluded.max_streams,"
                " daily_tokens = excluded.daily_tokens",
                (
                    limits.tenant,
                    limits.requests_per_window,
                    limits.window_seconds,
                    limits.max_streams,
                    limits.daily_tokens,
                    records.now_micros(),
                ),
            )

    async def shared_secret(self, name: str, candidate: str) -> str:
        """The secret named `name`: `candidate` if none was stored yet, else the stored one."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO shared_secrets (name, value, create_time) VALUES (?, ?, ?)",
                (name, candidate, records.now_micros()),
            )
            async with db.execute(
                "SELECT value FROM shared_secrets WHERE name = ?", (name,)
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return str(row[0])
