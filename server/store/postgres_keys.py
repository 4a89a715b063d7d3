"""API keys, tenant limits and shared secrets in the PostgreSQL project store (mixed into it)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import asyncpg

from server.auth.records import ApiKey, TenantLimits
from server.store import records

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

_KEY_COLUMNS = "id, tenant, scopes, secret_sha256, description, create_time, revoke_time"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["id"],
        tenant=row["tenant"],
        scopes=tuple(s for s in str(row["scopes"]).split(",") if s),
        secret_sha256=row["secret_sha256"],
        description=row["description"],
        create_time=int(row["create_time"]),
        revoke_time=int(row["revoke_time"]),
    )


class PostgresKeys:
    """The KeyStore half of PostgresProjectStore."""

    def _connection(self) -> AbstractAsyncContextManager[PoolConnectionProxy[Any]]:
        raise NotImplementedError

    def _transaction(self) -> AbstractAsyncContextManager[PoolConnectionProxy[Any]]:
        raise NotImplementedError

    async def create_key(self, key: ApiKey) -> None:
        now = key.create_time or records.now_micros()
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO tenants (id, create_time) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                key.tenant,
                now,
            )
            await db.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, 0)",
                key.key_id,
                key.tenant,
                ",".join(key.scopes),
                key.secret_sha256,
                key.description,
                now,
            )

    async def get_key(self, key_id: str) -> ApiKey | None:
        async with self._connection() as db:
            row = await db.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return None if row is None else _key(row)

    async def list_keys(self, tenant: str = "") -> list[ApiKey]:
        async with self._connection() as db:
            if tenant:
                rows = await db.fetch(
                    f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant = $1"
                    " ORDER BY create_time, id",
                    tenant,
                )
            else:
                rows = await db.fetch(
                    f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY create_time, id"
                )
        return [_key(row) for row in rows]

    async def revoke_key(self, key_id: str) -> bool:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE api_keys SET revoke_time = $1 WHERE id = $2 AND revoke_time = 0",
                records.now_micros(),
                key_id,
            )
            found = await db.fetchval("SELECT 1 FROM api_keys WHERE id = $1", key_id)
        return found is not None

    async def get_tenant_limits(self, tenant: str) -> TenantLimits:
        async with self._connection() as db:
            row = await db.fetchrow(
                "SELECT requests_per_window, window_seconds, max_streams, daily_tokens"
                " FROM tenants WHERE id = $1",
                tenant,
            )
        if row is None:
            return TenantLimits(tenant)
        return TenantLimits(
            tenant,
            int(row["requests_per_window"]),
            int(row["window_seconds"]),
            int(row["max_streams"]),
            int(row["daily_tokens"]),
        )

    async def set_tenant_limits(self, limits: TenantLimits) -> None:
        async with self._connection() as db:
            await db.execute(
                "INSERT INTO tenants (id, requests_per_window, window_seconds, max_streams,"
                " daily_tokens, create_time) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (id) DO UPDATE SET"
                " requests_per_window = EXCLUDED.requests_per_window,"
                " window_seconds = EXCLUDED.window_seconds, max_streams = EXCLUDED.max_streams,"
                " daily_tokens = EXCLUDED.daily_tokens",
                limits.tenant,
                limits.requests_per_window,
                limits.window_seconds,
                limits.max_streams,
                limits.daily_tokens,
                records.now_micros(),
            )

    async def shared_secret(self, name: str, candidate: str) -> str:
        """The secret named `name`: `candidate` if none was stored yet, else the stored one."""
        async with self._connection() as db:
            await db.execute(
                "INSERT INTO shared_secrets (name, value, create_time) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO NOTHING",
                name,
                candidate,
                records.now_micros(),
            )
            value = await db.fetchval("SELECT value FROM shared_secrets WHERE name = $1", name)
        return str(value)
