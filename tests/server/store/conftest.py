"""`make_store`: opens project stores of one backend per test run — SQLite, then PostgreSQL.

Every store a test opens shares one database (the same SQLite file, or one
fresh PostgreSQL database), so a second store stands in for a second core.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Protocol

import pytest

from server.store import PostgresProjectStore, SqliteProjectStore
from tests.backends.postgres import fresh_database

Store = SqliteProjectStore | PostgresProjectStore


class StoreFactory(Protocol):
    """Opens another store on this test's database."""

    def __call__(self, *, request_id_ttl_seconds: float = ...) -> Awaitable[Store]: ...


@pytest.fixture(params=["sqlite", "postgres"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Open stores on this test's own database; all are closed afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        opened: list[Store] = []
        if request.param == "sqlite":
            path = tmp_path / "projects.sqlite3"

            def build(ttl: float) -> Store:
                return SqliteProjectStore(path, request_id_ttl_seconds=ttl)
        else:
            server_url = request.getfixturevalue("postgres_url")
            url = await stack.enter_async_context(fresh_database(server_url))

            def build(ttl: float) -> Store:
                return PostgresProjectStore(url, request_id_ttl_seconds=ttl)

        async def open_store(*, request_id_ttl_seconds: float = 24 * 3600.0) -> Store:
            store = build(request_id_ttl_seconds)
            await store.open()
            opened.append(store)
            return store

        try:
            yield open_store
        finally:
            for store in opened:
                await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    """One open store."""
    return await make_store()
